"""MNIST and Fashion-MNIST: IDX files, gzipped or not.

Both datasets are the same four IDX files in different folders: torchvision's
``<root>/<Class>/raw``, the files lying directly in ``root``, or (Fashion-MNIST) where
Debian's ``dataset-fashion-mnist`` installs them. :func:`read_idx` checks each file's magic
number and length, so a truncated file or one in the wrong place fails with its path.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ticketalign.data.files import DatasetError, resolve_root, torchvision_download
from ticketalign.data.memory import InMemoryDataset, channel_stats

#: where Debian's ``dataset-fashion-mnist`` package puts the four IDX .gz files
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_FILES = {  # file stem -> the IDX magic number it must carry (ubyte, 3 dims / 1 dim)
    "train-images-idx3-ubyte": 0x00000803,
    "train-labels-idx1-ubyte": 0x00000801,
    "t10k-images-idx3-ubyte": 0x00000803,
    "t10k-labels-idx1-ubyte": 0x00000801,
}


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """An IDX file (``.gz`` or plain) as a numpy array; checks the magic number and the length."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DatasetError(f"{path} could not be read ({err}); the file is truncated or corrupt") from err
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found is None or raw[0] or raw[1] or raw[2] not in _IDX_DTYPES or (magic is not None and found != magic):
        want = f"0x{magic:08x}" if magic is not None else "an IDX magic number"
        raise DatasetError(f"{path} is not the expected IDX file: magic number {raw[:4].hex()!r}, expected {want}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path} is truncated: its header needs {header} bytes, the file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(f"{path} is truncated or padded: shape {dims} needs {expected} data bytes, "
                           f"found {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_files_in(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (plain preferred over .gz); None if it holds none of them."""
    found = {}
    for stem in _IDX_FILES:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[stem] = candidate
                break
    if not found:
        return None
    missing = [s for s in _IDX_FILES if s not in found]
    if missing:
        raise DatasetError(f"{folder} is incomplete: it lacks {', '.join(m + '[.gz]' for m in missing)}")
    return found


@dataclass(frozen=True)
class _IdxLayout:
    name: str
    title: str
    torchvision_class: str  # also the folder torchvision downloads into: <root>/<class>/raw
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]


_MNIST = _IdxLayout("mnist", "MNIST", "MNIST", MNIST_MEAN, MNIST_STD, tuple(str(i) for i in range(10)))
_FASHION_MNIST = _IdxLayout(
    "fashion_mnist", "Fashion-MNIST", "FashionMNIST", FASHION_MNIST_MEAN, FASHION_MNIST_STD,
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
)


def _load_idx_dataset(layout: _IdxLayout, root: str | os.PathLike | None, download: bool,
                      fallback: Path | None = None) -> InMemoryDataset:
    root = resolve_root(root)
    candidates = [root / layout.torchvision_class / "raw", root] + ([fallback] if fallback else [])
    files = next((f for f in map(_idx_files_in, candidates) if f is not None), None)
    if files is None and download:
        torchvision_download(layout.torchvision_class, root)
        files = _idx_files_in(candidates[0])
    if files is None:
        extra = f" or Debian's path {fallback} (apt-get install dataset-fashion-mnist)" if fallback else ""
        raise DatasetError(
            f"{layout.title} not found: checked {', '.join(map(str, candidates))}. Set dataset.download: true on "
            f"a machine with internet (torchvision fetches it into {root / layout.torchvision_class / 'raw'}), or "
            f"place the four IDX files ({', '.join(f + '.gz' for f in _IDX_FILES)}) in {root}{extra}"
        )
    arrays = {stem: read_idx(files[stem], magic) for stem, magic in _IDX_FILES.items()}
    split = {}
    for part in ("train", "t10k"):
        x, y = arrays[f"{part}-images-idx3-ubyte"], arrays[f"{part}-labels-idx1-ubyte"].astype(np.int64)
        if len(x) != len(y):
            raise DatasetError(f"{files[f'{part}-images-idx3-ubyte']} has {len(x)} images but "
                               f"{files[f'{part}-labels-idx1-ubyte']} has {len(y)} labels")
        if len(y) and not 0 <= y.min() <= y.max() < len(layout.classes):
            raise DatasetError(f"{files[f'{part}-labels-idx1-ubyte']}: labels outside [0, {len(layout.classes)})")
        split[part] = torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)
    return InMemoryDataset(
        name=layout.name,
        x_train=split["train"][0],
        y_train=split["train"][1],
        x_test=split["t10k"][0],
        y_test=split["t10k"][1],
        num_classes=len(layout.classes),
        mean=channel_stats(layout.mean),
        std=channel_stats(layout.std),
        classes=layout.classes,
    )


def load_mnist(root: str | os.PathLike | None = None, download: bool = False) -> InMemoryDataset:
    """MNIST (60,000 / 10,000) from ``<root>/MNIST/raw`` or IDX files in ``root``; no augmentation."""
    return _load_idx_dataset(_MNIST, root, download)


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = False) -> InMemoryDataset:
    """Fashion-MNIST (60,000 / 10,000) from ``<root>/FashionMNIST/raw``, IDX files in ``root``, or
    :data:`DEBIAN_FASHION_MNIST` when ``root`` has none; no augmentation."""
    return _load_idx_dataset(_FASHION_MNIST, root, download, fallback=DEBIAN_FASHION_MNIST)
