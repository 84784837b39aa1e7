"""Datasets held in memory, batched and augmented on the training device.

Small datasets (digits, MNIST, Fashion-MNIST, CIFAR-10/100) fit on the device whole: keeping
the uint8 images there and cropping, flipping and normalizing each batch with vectorised ops
is far faster than DataLoader workers, and it makes a batch a pure function of
``(seed, epoch)`` on every device. The format modules (``digits``, ``idx``, ``cifar``) only
read files; they all return an :class:`InMemoryDataset`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ticketalign.seeding import derive_seed

Batch = tuple[torch.Tensor, torch.Tensor]

CROP_PADDING = 4


def channel_stats(values: Sequence[float]) -> torch.Tensor:
    """Per-channel constants shaped to broadcast over (N, C, H, W)."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)


def random_crop_flip(
    images: torch.Tensor, index: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, padding: int
) -> torch.Tensor:
    """``images[index]`` randomly cropped and flipped, with vectorised ops on their device.

    Equivalent to torchvision's ``RandomCrop(size, padding=padding)`` (zero fill) followed by
    ``RandomHorizontalFlip``: sample ``i`` is the window at offset ``shifts[i] = (dy, dx)``,
    each in ``[0, 2 * padding]``, of the zero-padded image, mirrored left-right where
    ``flips[i]``. The batch is padded once, then two gathers with per-sample row and column
    indices cut the windows (the flip is folded into the column indices).
    """
    batch = images.index_select(0, index)
    n, channels, height, width = batch.shape
    padded = F.pad(batch, (padding, padding, padding, padding))
    rows = shifts[:, :1] + torch.arange(height, device=batch.device)  # (B, H) rows of the padded image
    cols = torch.arange(width, device=batch.device)
    cols = torch.where(flips[:, None], width - 1 - cols, cols) + shifts[:, 1:]  # (B, W)
    out = padded.gather(2, rows[:, None, :, None].expand(n, channels, height, width + 2 * padding))
    return out.gather(3, cols[:, None, None, :].expand(n, channels, height, width))


@dataclass(frozen=True)
class InMemoryDataset:
    """A classification dataset held entirely in memory (CPU or the training device).

    ``x_*`` are float features ready for the model, or uint8 images (N, C, H, W) that
    :meth:`prepare` converts and normalizes per batch with ``mean``/``std`` (shape (C, 1, 1)).
    With ``augment`` every training batch is randomly cropped (zero padding ``crop_padding``)
    and horizontally flipped before normalization; test batches never are.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    augment: bool = False
    crop_padding: int = CROP_PADDING
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise ValueError(
                f"{self.name}: {len(self.x_train)} train inputs vs {len(self.y_train)} labels, "
                f"{len(self.x_test)} test inputs vs {len(self.y_test)} labels"
            )
        if self.augment and self.x_train.ndim != 4:
            raise ValueError(f"{self.name}: augmentation needs images (N, C, H, W), got {tuple(self.x_train.shape)}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        return len(self.y_test)

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: torch.device | str) -> InMemoryDataset:
        """The same dataset with every tensor (uint8 images included) on ``device``."""
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
        if x.dtype != torch.uint8:  # stored features: never modify them in place
            return x if self.mean is None else (x - self.mean) / self.std
        x = x.float().div_(255)
        return x if self.mean is None else x.sub_(self.mean).div_(self.std)

    def train_batches(
        self, batch_size: int, seed: int, epoch: int, shuffle: bool = True, augment: bool | None = None
    ) -> Iterator[Batch]:
        """One epoch of training batches; order and augmentation depend only on ``(seed, epoch)``.

        ``augment`` overrides the dataset's setting (e.g. ``False`` to collect features).
        The random draws are made on the CPU, once per epoch, so the batches are the same on
        every device.
        """
        n = self.num_train
        augment = self.augment if augment is None else augment
        gen = torch.Generator().manual_seed(derive_seed(seed, epoch))
        order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
        order = order.to(self.device)
        if augment:
            shifts = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=gen).to(self.device)
            flips = (torch.rand(n, generator=gen) < 0.5).to(self.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if augment:
                window = slice(start, start + batch_size)
                x = random_crop_flip(self.x_train, idx, shifts[window], flips[window], self.crop_padding)
            else:
                x = self.x_train.index_select(0, idx)
            yield self.prepare(x), self.y_train.index_select(0, idx)

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, self.num_test, batch_size):
            yield self.prepare(self.x_test[start : start + batch_size]), self.y_test[start : start + batch_size]
