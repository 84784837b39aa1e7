"""Dataset registry: every dataset the pipeline trains on, behind one small interface.

Two kinds of dataset satisfy the :class:`Dataset` protocol (``train_batches(batch_size, seed=,
epoch=)``, ``test_batches(batch_size)``, ``input_shape``, ``num_classes``, ``num_train``,
``num_test``, ``device``, ``to(device)``):

* :class:`~ticketalign.data.memory.InMemoryDataset` (digits, MNIST, Fashion-MNIST,
  CIFAR-10/100): the whole train and test split as tensors, images kept as uint8
  ``(N, C, H, W)``. ``to(device)`` moves the whole set to the training device once; every batch
  is then gathered, augmented (random crop with zero padding + horizontal flip, vectorised) and
  normalized on that device.
* :class:`~ticketalign.data.imagenet.ImageFolderDataset` (ImageNet): JPEG folders decoded by
  DataLoader worker processes.

Batch order *and* augmentation are pure functions of ``(seed, epoch)`` (see
:func:`ticketalign.seeding.derive_seed`). That makes every run reproducible and lets an
interrupted run resume at an epoch boundary with exactly the data it would have seen.

One module per format family: :mod:`~ticketalign.data.digits` (scikit-learn's CSV),
:mod:`~ticketalign.data.idx` (MNIST, Fashion-MNIST), :mod:`~ticketalign.data.cifar` (the
pickles), :mod:`~ticketalign.data.imagenet` (ImageFolder), with :mod:`~ticketalign.data.files`
for where the files live and how they are downloaded. On-disk formats are the ones torchvision
writes (``cifar-10-batches-py/``, ``cifar-100-python/``, ``MNIST/raw/``, ``FashionMNIST/raw/``)
and, for the MNIST family, IDX files lying directly in a folder (as Debian's
``dataset-fashion-mnist`` installs them). Files are read with pickle/gzip/numpy: torchvision
(~2 s to import) is imported only to download or for ImageNet.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch

from ticketalign.data.cifar import load_cifar10, load_cifar100
from ticketalign.data.digits import load_digits
from ticketalign.data.files import DEFAULT_ROOT, DatasetError
from ticketalign.data.idx import DEBIAN_FASHION_MNIST, load_fashion_mnist, load_mnist
from ticketalign.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataset, load_imagenet
from ticketalign.data.memory import Batch, InMemoryDataset, random_crop_flip

__all__ = [
    "DATASETS",
    "DATASET_SHAPES",
    "DEBIAN_FASHION_MNIST",
    "DEFAULT_ROOT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Batch",
    "Dataset",
    "DatasetError",
    "ImageFolderDataset",
    "InMemoryDataset",
    "load_dataset",
    "random_crop_flip",
]


@runtime_checkable
class Dataset(Protocol):
    """What the training loop, evaluation, IMP and matching use of a dataset, whatever its kind."""

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def num_train(self) -> int: ...

    @property
    def num_test(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset, its batches delivered on ``device``."""
        ...

    def train_batches(
        self, batch_size: int, seed: int, epoch: int, shuffle: bool = True, augment: bool | None = None
    ) -> Iterator[Batch]:
        """One epoch of training batches; order and augmentation depend only on ``(seed, epoch)``."""
        ...

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        """The test split in order, never augmented."""
        ...


Loader = Callable[..., Dataset]

DATASETS: dict[str, Loader] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "imagenet": load_imagenet,
}

#: (input_shape, num_classes) of every dataset as its loader delivers it, known without reading it
#: (the config check builds the model on the meta device with these; a test holds them to the loaders)
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((64,), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "imagenet": ((3, 224, 224), 1000),
}


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False, **options: Any) -> Dataset:
    """Load dataset ``name`` from ``root`` (downloading only if asked and possible).

    ``options`` go to the dataset's loader (e.g. ``num_workers`` for imagenet).
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](root=root, download=download, **options)
