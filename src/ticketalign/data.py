"""Dataset registry: every dataset the pipeline trains on, behind one small interface.

A dataset is an :class:`InMemoryDataset`: the whole train and test split as tensors (on the CPU
or on the training device), with batch iteration whose order is a pure function of
``(seed, epoch)``. That makes every run reproducible and lets an interrupted run resume at an
epoch boundary with exactly the data order it would have seen.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class DatasetError(RuntimeError):
    """A dataset is missing, incomplete or unknown; the message says where and what to do."""


@dataclass(frozen=True)
class InMemoryDataset:
    """A classification dataset held entirely in memory.

    ``x_*`` are float features ready for the model, or uint8 images (N, C, H, W) that
    :meth:`prepare` converts and normalizes per batch with ``mean``/``std``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: torch.device | str) -> InMemoryDataset:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            x_train=move(self.x_train),
            y_train=move(self.y_train),
            x_test=move(self.x_test),
            y_test=move(self.y_test),
            mean=move(self.mean),
            std=move(self.std),
        )

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Turn stored inputs into model inputs (uint8 -> normalized float)."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def train_batches(self, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> Iterator[Batch]:
        """One epoch of training batches; the order depends only on ``(seed, epoch)``."""
        n = len(self.y_train)
        if shuffle:
            gen = torch.Generator().manual_seed(derive_seed(seed, epoch))
            order = torch.randperm(n, generator=gen).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield self.prepare(self.x_train[idx]), self.y_train[idx]

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self.y_test), batch_size):
            yield self.prepare(self.x_test[start : start + batch_size]), self.y_test[start : start + batch_size]


def derive_seed(*parts: int) -> int:
    """A distinct, reproducible 63-bit seed for each tuple of integers (e.g. run seed, epoch)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


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


Loader = Callable[..., InMemoryDataset]

DATASETS: dict[str, Loader] = {
    "digits": load_digits,
}


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False) -> InMemoryDataset:
    """Load dataset ``name`` from ``root`` (downloading only if asked and possible)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](root=root, download=download)
