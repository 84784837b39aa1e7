"""CIFAR-10 / CIFAR-100: the "python version" pickles, as torchvision extracts them.

The files are Python 2 pickles; they are read here with a restricted unpickler (a data file
may hold arrays only, never run code) and checked (keys, dtype, shape, label range), so a
truncated or foreign file fails with its path instead of training on garbage. Reading them
needs no torchvision; it is imported only to download.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ticketalign.data.files import DatasetError, resolve_root, torchvision_download
from ticketalign.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ticketalign.data.memory import InMemoryDataset, channel_stats

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else (a data file runs no code)."""

    _NUMPY_MODULES = {"numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                      "numpy._core.numeric"}
    _NUMPY_NAMES = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module: str, name: str) -> Any:
        if (module in self._NUMPY_MODULES and name in self._NUMPY_NAMES) or (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a dataset file holds only arrays")


def _read_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle as a dict with str keys (the files are Python 2 pickles with byte-string keys)."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as err:
        raise DatasetError(f"{path} is not a readable CIFAR pickle ({type(err).__name__}: {err}); "
                           "the file is truncated or corrupt: delete the folder and download it again") from err
    if not isinstance(obj, dict):
        raise DatasetError(f"{path} holds a {type(obj).__name__}, expected a dict of arrays")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


@dataclass(frozen=True)
class _CifarLayout:
    name: str
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    torchvision_class: str
    url: str


_CIFAR10 = _CifarLayout(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
    mean=IMAGENET_MEAN,  # as the paper does
    std=IMAGENET_STD,
    torchvision_class="CIFAR10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
)
_CIFAR100 = _CifarLayout(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
    mean=CIFAR100_MEAN,
    std=CIFAR100_STD,
    torchvision_class="CIFAR100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
)


def _cifar_split(layout: _CifarLayout, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one CIFAR pickle, checked."""
    batch = _read_pickle(path)
    for key in ("data", layout.label_key):
        if key not in batch:
            raise DatasetError(f"{path} has no {key!r} entry (found {sorted(batch)}); is it a {layout.title} file?")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[layout.label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' should be uint8 of shape (N, 3072), found {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise DatasetError(f"{path}: {len(data)} images but labels of shape {labels.shape}")
    if len(labels) and not 0 <= labels.min() <= labels.max() < layout.num_classes:
        raise DatasetError(f"{path}: labels outside [0, {layout.num_classes})")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(layout: _CifarLayout, root: str | os.PathLike | None, download: bool) -> InMemoryDataset:
    root = resolve_root(root)
    folder = root / layout.folder
    needed = (*layout.train_files, layout.test_file, layout.meta_file)
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing and download:
        torchvision_download(layout.torchvision_class, root)
        missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        what = "does not exist" if not folder.is_dir() else f"is incomplete: missing {', '.join(missing)}"
        raise DatasetError(
            f"{layout.title} not found: {folder} {what}. Set dataset.download: true on a machine with internet "
            f"(torchvision fetches it into {root}), or place {layout.folder}/ under {root} "
            f"(extract {layout.url} there)"
        )
    train = [_cifar_split(layout, folder / f) for f in layout.train_files]
    x_test, y_test = _cifar_split(layout, folder / layout.test_file)
    names = _read_pickle(folder / layout.meta_file).get(layout.names_key, [])
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return InMemoryDataset(
        name=layout.name,
        x_train=torch.from_numpy(np.concatenate([x for x, _ in train])),
        y_train=torch.from_numpy(np.concatenate([y for _, y in train])),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test)),
        y_test=torch.from_numpy(y_test),
        num_classes=layout.num_classes,
        mean=channel_stats(layout.mean),
        std=channel_stats(layout.std),
        augment=True,
        classes=classes,
    )


def load_cifar10(root: str | os.PathLike | None = None, download: bool = False) -> InMemoryDataset:
    """CIFAR-10 (50,000 / 10,000), ImageNet mean/std as in the paper, crop 32 pad 4 + flip."""
    return _load_cifar(_CIFAR10, root, download)


def load_cifar100(root: str | os.PathLike | None = None, download: bool = False) -> InMemoryDataset:
    """CIFAR-100 fine labels (50,000 / 10,000), its own mean/std, crop 32 pad 4 + flip."""
    return _load_cifar(_CIFAR100, root, download)
