"""ImageNet: ImageFolder trees streamed through DataLoader workers.

ImageNet does not fit in memory, so unlike :mod:`ticketalign.data.memory` its images are
read by worker processes. Two paths (``ImageFolderDataset.decode``): on CUDA the workers only
read bytes and the JPEGs are decoded, cropped and flipped on the GPU
(:mod:`ticketalign.data.device_decode`); elsewhere the workers decode and crop with PIL and only
normalization happens on the device. Both crop the same boxes and flip the same samples.
Augmentation is seeded per sample, so batches stay a pure function of ``(seed, epoch)``
whatever the number of workers. torchvision is imported only when ImageNet is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import torch

from ticketalign.data.files import DatasetError, resolve_root
from ticketalign.data.memory import Batch, channel_stats
from ticketalign.seeding import derive_seed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_num_workers() -> int:
    """DataLoader worker processes: one per available core, at most 16."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(16, cores))


class _SeededSamples:
    """Map-style dataset over keys ``(index, seed)``: image ``index`` transformed under RNG ``seed``.

    Seeding torch's RNG per sample makes the random transforms a function of the key alone, so
    the augmentation does not depend on the number of workers or on which worker decodes a
    sample; the caller's RNG state is restored afterwards (it matters when there are no workers).
    """

    def __init__(self, folder: Any, transform: Callable[[Any], torch.Tensor]):
        self.folder, self.transform = folder, transform

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, key: tuple[int, int | None]) -> tuple[torch.Tensor, int]:
        index, seed = key
        path, label = self.folder.samples[index]
        image = self.folder.loader(path)
        if seed is None:
            return self.transform(image), label
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            return self.transform(image), label
        finally:
            torch.set_rng_state(state)


@dataclass(frozen=True)
class ImageFolderDataset:
    """A dataset of image folders (ImageNet) streamed through a DataLoader; a
    :class:`~ticketalign.data.Dataset`, like :class:`~ticketalign.data.memory.InMemoryDataset`.

    Workers decode and crop to uint8 tensors; batches are moved (from pinned memory when the
    device is CUDA) to ``device`` and normalized there, so :meth:`to` only records the device.
    Training: RandomResizedCrop(image_size) + horizontal flip; test: Resize(resize_size) +
    CenterCrop(image_size). Order and augmentation depend only on ``(seed, epoch)``.
    """

    name: str
    train_folder: Any  # torchvision.datasets.ImageFolder
    test_folder: Any
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    image_size: int = 224
    resize_size: int = 256
    num_workers: int = field(default_factory=default_num_workers)
    augment: bool = True
    device: torch.device = torch.device("cpu")
    #: where JPEGs are decoded and cropped: "device" (the training device, nvJPEG on CUDA),
    #: "workers" (PIL in the DataLoader workers), "auto" (device on CUDA, else workers)
    decode: str = "auto"
    #: ``(rank, world)``: training batches are this process's slice of each global batch, cut
    #: before decoding (ticketalign.distributed); evaluation always covers the whole split
    shard: tuple[int, int] = (0, 1)

    def __post_init__(self) -> None:
        if self.decode not in ("auto", "device", "workers"):
            raise ValueError(f"{self.name}: decode is {self.decode!r}; allowed values: auto, device, workers")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    @property
    def num_train(self) -> int:
        return len(self.train_folder.samples)

    @property
    def num_test(self) -> int:
        return len(self.test_folder.samples)

    @cached_property
    def y_train(self) -> torch.Tensor:
        return torch.tensor(self.train_folder.targets, dtype=torch.int64)

    @cached_property
    def y_test(self) -> torch.Tensor:
        return torch.tensor(self.test_folder.targets, dtype=torch.int64)

    def to(self, device: torch.device | str) -> ImageFolderDataset:
        return replace(self, device=torch.device(device))

    def _transform(self, train: bool) -> Callable[[Any], torch.Tensor]:
        from torchvision import transforms  # already imported by load_imagenet

        if train:
            ops = [transforms.RandomResizedCrop(self.image_size), transforms.RandomHorizontalFlip()]
        else:
            ops = [transforms.Resize(self.resize_size), transforms.CenterCrop(self.image_size)]
        return transforms.Compose([*ops, transforms.PILToTensor()])

    def _batch_keys(self, keys: list, batch_size: int, sharded: bool) -> list[list]:
        """The keys of each batch: of each global batch, this process's share (as ``tensor_split``
        would cut the batch, so the shares concatenate to it) when ``sharded``."""
        rank, world = self.shard if sharded else (0, 1)
        out = []
        for start in range(0, len(keys), batch_size):
            chunk = keys[start : start + batch_size]
            size, extra = divmod(len(chunk), world)
            lo = rank * size + min(rank, extra)
            out.append(chunk[lo : lo + size + (rank < extra)])
        return out

    @property
    def decodes_on_device(self) -> bool:
        return self.decode == "device" or (self.decode == "auto" and self.device.type == "cuda")

    def _batches(self, folder: Any, train: bool, keys: list, batch_size: int, seed: int) -> Iterator[Batch]:
        from torch.utils.data import DataLoader

        if self.decodes_on_device:
            yield from self._device_batches(folder, keys, batch_size, seed)
            return
        loader = DataLoader(
            _SeededSamples(folder, self._transform(train)),
            batch_sampler=self._batch_keys(keys, batch_size, sharded=folder is self.train_folder),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(seed),  # leaves torch's global RNG alone
        )
        mean = channel_stats(self.mean).to(self.device)
        std = channel_stats(self.std).to(self.device)
        for x, y in loader:
            x = x.to(self.device, non_blocking=True).float().div_(255).sub_(mean).div_(std)
            yield x, y.to(self.device, non_blocking=True)

    def _device_batches(self, folder: Any, keys: list, batch_size: int, seed: int) -> Iterator[Batch]:
        """Workers read bytes; decode, crop, flip and normalize on the device (device_decode)."""
        from torch.utils.data import DataLoader

        from ticketalign.data.device_decode import RawSamples, collate_raw, decode_batch, prepare_batch

        batches = self._batch_keys(keys, batch_size, sharded=folder is self.train_folder)
        loader = DataLoader(RawSamples(folder), batch_sampler=batches, num_workers=self.num_workers,
                            collate_fn=collate_raw, generator=torch.Generator().manual_seed(seed))
        mean = channel_stats(self.mean).to(self.device)
        std = channel_stats(self.std).to(self.device)
        for data, y, seeds in loader:
            images = decode_batch(data, self.device)
            x = prepare_batch(images, seeds, self.image_size, self.resize_size)
            yield x.div_(255).sub_(mean).div_(std), y.to(self.device, non_blocking=True)

    def train_batches(
        self, batch_size: int, seed: int, epoch: int, shuffle: bool = True, augment: bool | None = None
    ) -> Iterator[Batch]:
        """One epoch of training batches; order and augmentation depend only on ``(seed, epoch)``."""
        augment = self.augment if augment is None else augment
        gen = torch.Generator().manual_seed(derive_seed(seed, epoch))
        n = self.num_train
        order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
        if augment:
            keys = list(zip(order.tolist(), torch.randint(0, 2**62, (n,), generator=gen).tolist()))
        else:
            keys = [(i, None) for i in order.tolist()]
        return self._batches(self.train_folder, augment, keys, batch_size, derive_seed(seed, epoch, 1))

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        keys = [(i, None) for i in range(self.num_test)]
        return self._batches(self.test_folder, False, keys, batch_size, 0)


def load_imagenet(
    root: str | os.PathLike | None = None, download: bool = False, num_workers: int | None = None
) -> ImageFolderDataset:
    """ImageNet-1k as ``<root>/train/<class>/*.JPEG`` and ``<root>/val/<class>/*.JPEG``."""
    root = resolve_root(root)
    how = (f"ImageNet cannot be downloaded automatically{' (dataset.download is ignored)' if download else ''}: "
           f"get it from https://image-net.org and extract it so that {root}/train/<wnid>/*.JPEG and "
           f"{root}/val/<wnid>/*.JPEG exist (the validation images sorted into class folders)")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetError(f"ImageNet not found: {root / split} does not exist. {how}")
    from torchvision.datasets import ImageFolder  # deferred on purpose: ~2 s per process

    folders = {}
    for split in ("train", "val"):
        try:
            folders[split] = ImageFolder(str(root / split))
        except (FileNotFoundError, OSError) as err:
            raise DatasetError(f"ImageNet at {root / split} is incomplete: {err}. {how}") from err
    if folders["train"].classes != folders["val"].classes:
        only_train = sorted(set(folders["train"].classes) - set(folders["val"].classes))
        only_val = sorted(set(folders["val"].classes) - set(folders["train"].classes))
        raise DatasetError(f"ImageNet class folders differ between {root / 'train'} and {root / 'val'} "
                           f"(only in train: {only_train[:5]}, only in val: {only_val[:5]}); labels would not match")
    return ImageFolderDataset(
        name="imagenet",
        train_folder=folders["train"],
        test_folder=folders["val"],
        num_classes=len(folders["train"].classes),
        classes=tuple(folders["train"].classes),
        **({} if num_workers is None else {"num_workers": num_workers}),
    )
