"""Shared fixtures: small, fast, deterministic pieces for the tests."""

import pytest
import torch

from ticketalign.data import load_dataset


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run on 2 cores, often next to another process: keep torch to one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
