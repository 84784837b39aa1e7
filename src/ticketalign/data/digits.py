"""scikit-learn's 8x8 handwritten digits: the embedded default's dataset.

It ships inside scikit-learn, so the default workflow runs with no download; it is read as
a CSV without importing sklearn (~1.6 s) and split with a fixed stratified split, since the
file has no train/test split of its own.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from ticketalign.data.files import DatasetError
from ticketalign.data.memory import InMemoryDataset


def _sklearn_data_file(name: str) -> Path:
    """Path of a data file shipped inside scikit-learn, found without importing sklearn (~1.6 s)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the digits dataset ships with scikit-learn; install it: pip install scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not path.exists():
        raise DatasetError(f"{path} is missing from the scikit-learn installation; reinstall scikit-learn")
    return path


DIGITS_TEST_SIZE = 397
DIGITS_SPLIT_SEED = 0


def stratified_split(labels: np.ndarray, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a fixed stratified train/test split: each class keeps its share in the test set."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * test_size / len(labels)
    take = np.floor(exact).astype(int)
    # largest remainders get the leftover test slots, so the test set has exactly test_size items
    for i in np.argsort(-(exact - take), kind="stable")[: test_size - take.sum()]:
        take[i] += 1
    train, test = [], []
    for c, k in zip(classes, take):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(root: str | os.PathLike | None = None, download: bool = False) -> InMemoryDataset:
    """scikit-learn's 8x8 digits: 1,400 train / 397 test, stratified, standardized on train."""
    raw = np.loadtxt(_sklearn_data_file("digits.csv.gz"), delimiter=",", dtype=np.float32)
    x, y = raw[:, :-1], raw[:, -1].astype(np.int64)
    train, test = stratified_split(y, DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED)
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0  # pixels that are always blank stay 0 rather than dividing by 0
    x = (x - mean) / std
    return InMemoryDataset(
        name="digits",
        x_train=torch.from_numpy(x[train]),
        y_train=torch.from_numpy(y[train]),
        x_test=torch.from_numpy(x[test]),
        y_test=torch.from_numpy(y[test]),
        num_classes=10,
    )
