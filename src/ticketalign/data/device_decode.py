"""ImageNet input at GPU speed: JPEGs decoded on the training device, cropped and flipped there.

With PIL in DataLoader workers, a GPU training ResNet50 waits for the CPUs: decoding and
resizing a 500x375 JPEG costs several milliseconds of CPU time per image. Here the workers only
read the files' bytes; the main process hands each batch of byte strings to
``torchvision.io.decode_jpeg(..., device="cuda")`` (nvJPEG, one call per batch), and the random
resized crop, the flip and the resize happen on the device, image by image (their sizes differ).

The geometry is the CPU path's, exactly: each training sample's crop box and flip are the draws
torchvision's ``RandomResizedCrop`` and ``RandomHorizontalFlip`` make under the sample's seed,
as in the workers' PIL transform, so both paths crop the same box of the same image and flip
the same samples; they differ only in the JPEG decoder and the resampling filter
(antialiased bilinear in both, PIL's vs torch's). Every function takes tensors on any device,
so the CPU test suite runs this path too (decode on the CPU with the same call).

Files that are not baseline JPEGs nvJPEG can read (ImageNet holds a PNG and a few CMYK JPEGs)
fall back to the CPU decoder, one image at a time.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

#: torchvision's RandomResizedCrop defaults, which the worker path uses
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


class RawSamples:
    """Map-style dataset over keys ``(index, seed)``: the file's bytes, its label and the seed.

    All a worker does is read a file, so a few workers keep up with any GPU."""

    def __init__(self, folder: Any):
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, key: tuple[int, int | None]) -> tuple[torch.Tensor, int, int | None]:
        index, seed = key
        path, label = self.folder.samples[index]
        data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
        return data, label, seed


def collate_raw(items: list[tuple[torch.Tensor, int, int | None]]) -> tuple[list[torch.Tensor], torch.Tensor, list]:
    """A batch of byte strings stays a list (their lengths differ); labels become one tensor."""
    data, labels, seeds = zip(*items)
    return list(data), torch.tensor(labels, dtype=torch.int64), list(seeds)


def decode_batch(data: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """RGB uint8 images (3, H, W) on ``device``: one batched decode_jpeg call, per-image fallback."""
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode(data, device)


def _decode(data: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    on = "cuda" if device.type == "cuda" else "cpu"
    try:
        images = decode_jpeg(list(data), mode=ImageReadMode.RGB, device=on)
    except RuntimeError:  # one file in the batch is not a JPEG nvJPEG reads: decode one by one
        images = []
        for d in data:
            try:
                images.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=on))
            except RuntimeError:
                images.append(decode_image(d, mode=ImageReadMode.RGB))
    return [img.to(device) for img in images]


def train_geometry(height: int, width: int, seed: int) -> tuple[tuple[int, int, int, int], bool]:
    """``((top, left, h, w), flip)`` of a training sample: the crop box and flip that the worker
    path's ``RandomResizedCrop`` + ``RandomHorizontalFlip`` draw for an image of this size under
    ``seed``. The same draws as torchvision's ``get_params`` (a test holds them equal), made from
    a generator of their own: seeding torch's global RNG would also reseed CUDA's."""
    gen = torch.Generator().manual_seed(seed)
    area = height * width
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(CROP_SCALE[0], CROP_SCALE[1], generator=gen).item()
        aspect = math.exp(torch.empty(1).uniform_(log_lo, log_hi, generator=gen).item())
        w, h = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=gen).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=gen).item())
            break
    else:  # no box fits in 10 tries: the central crop at the nearest allowed aspect ratio
        ratio = width / height
        if ratio < min(CROP_RATIO):
            w, h = width, int(round(width / min(CROP_RATIO)))
        elif ratio > max(CROP_RATIO):
            h, w = height, int(round(height * max(CROP_RATIO)))
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
    flip = bool(torch.rand(1, generator=gen) < 0.5)
    return (top, left, h, w), flip


def resized_crop(image: torch.Tensor, box: tuple[int, int, int, int], size: tuple[int, int],
                 flip: bool = False) -> torch.Tensor:
    """``image[:, top:top+h, left:left+w]`` resized to ``size`` (antialiased bilinear), mirrored
    if ``flip``; float values in [0, 255], on the image's device."""
    top, left, h, w = box
    crop = image[None, :, top : top + h, left : left + w].float()
    out = F.interpolate(crop, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    out = out.clamp_(0, 255)
    return out.flip(-1) if flip else out


def eval_geometry(height: int, width: int, resize: int, crop: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``Resize(resize)`` then ``CenterCrop(crop)`` as torchvision computes them:
    the resized ``(h, w)`` (shorter side = ``resize``) and the crop's ``(top, left)``."""
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = resize, int(resize * long / short)
    h, w = (new_short, new_long) if height <= width else (new_long, new_short)
    return (h, w), (int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0)))


def prepare_batch(images: Sequence[torch.Tensor], seeds: Sequence[int | None], image_size: int,
                  resize_size: int) -> torch.Tensor:
    """(B, 3, image_size, image_size) float in [0, 255]: each image randomly resized-cropped and
    flipped under its seed, or (seed None) resized and center-cropped as for evaluation."""
    out = []
    for image, seed in zip(images, seeds):
        _, height, width = image.shape
        if seed is not None:
            box, flip = train_geometry(height, width, seed)
            out.append(resized_crop(image, box, (image_size, image_size), flip))
        else:
            (h, w), (top, left) = eval_geometry(height, width, resize_size, image_size)
            resized = resized_crop(image, (0, 0, height, width), (h, w))
            out.append(resized[:, top : top + image_size, left : left + image_size])
    return torch.stack(out)
