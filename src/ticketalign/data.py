"""Dataset registry: every dataset the pipeline trains on, behind one small interface.

Two kinds of dataset share that interface (``train_batches(batch_size, seed=, epoch=)``,
``test_batches(batch_size)``, ``input_shape``, ``num_classes``, ``num_train``, ``device``,
``to(device)``):

* :class:`InMemoryDataset` (digits, MNIST, Fashion-MNIST, CIFAR-10/100): the whole train and
  test split as tensors, images kept as uint8 ``(N, C, H, W)``. ``to(device)`` moves the whole
  set to the training device once; every batch is then gathered, augmented (random crop with
  zero padding + horizontal flip, vectorised) and normalized on that device.
* :class:`ImageFolderDataset` (ImageNet): JPEG folders decoded by DataLoader worker processes.

Batch order *and* augmentation are pure functions of ``(seed, epoch)`` (see :func:`derive_seed`).
That makes every run reproducible and lets an interrupted run resume at an epoch boundary with
exactly the data it would have seen.

On-disk formats are the ones torchvision writes (``cifar-10-batches-py/``, ``cifar-100-python/``,
``MNIST/raw/``, ``FashionMNIST/raw/``) and, for the MNIST family, IDX files lying directly in a
folder (as Debian's ``dataset-fashion-mnist`` installs them). Files are read here with
pickle/gzip/numpy: torchvision (~2 s to import) is imported only to download or for ImageNet.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

Batch = tuple[torch.Tensor, torch.Tensor]

#: where datasets live when no root is given (the config schema's default too)
DEFAULT_ROOT = Path("resources/data")
#: where Debian's ``dataset-fashion-mnist`` package puts the four IDX .gz files
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CROP_PADDING = 4


class DatasetError(RuntimeError):
    """A dataset is missing, incomplete or unknown; the message says where and what to do."""


def derive_seed(*parts: int) -> int:
    """A distinct, reproducible 63-bit seed for each tuple of integers (e.g. run seed, epoch)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _channel_stats(values: Sequence[float]) -> torch.Tensor:
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


def _resolve_root(root: str | os.PathLike | None) -> Path:
    return DEFAULT_ROOT if root is None else Path(root).expanduser()


def _torchvision_download(dataset_class: str, root: Path) -> None:
    """Fetch a dataset with torchvision into ``root`` (its usual layout). Imports torchvision."""
    import torchvision.datasets  # deferred on purpose: ~2 s per process

    try:
        getattr(torchvision.datasets, dataset_class)(root=str(root), train=True, download=True)
    except Exception as err:  # network, checksum or disk errors all mean the same to the user
        raise DatasetError(f"downloading {dataset_class} into {root} failed: {err}") from err


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: the "python version" pickles, as torchvision extracts them
# --------------------------------------------------------------------------------------------


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
    root = _resolve_root(root)
    folder = root / layout.folder
    needed = (*layout.train_files, layout.test_file, layout.meta_file)
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing and download:
        _torchvision_download(layout.torchvision_class, root)
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
        mean=_channel_stats(layout.mean),
        std=_channel_stats(layout.std),
        augment=True,
        classes=classes,
    )


def load_cifar10(root: str | os.PathLike | None = None, download: bool = False) -> InMemoryDataset:
    """CIFAR-10 (50,000 / 10,000), ImageNet mean/std as in the paper, crop 32 pad 4 + flip."""
    return _load_cifar(_CIFAR10, root, download)


def load_cifar100(root: str | os.PathLike | None = None, download: bool = False) -> InMemoryDataset:
    """CIFAR-100 fine labels (50,000 / 10,000), its own mean/std, crop 32 pad 4 + flip."""
    return _load_cifar(_CIFAR100, root, download)


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: IDX files, gzipped or not
# --------------------------------------------------------------------------------------------

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
    root = _resolve_root(root)
    candidates = [root / layout.torchvision_class / "raw", root] + ([fallback] if fallback else [])
    files = next((f for f in map(_idx_files_in, candidates) if f is not None), None)
    if files is None and download:
        _torchvision_download(layout.torchvision_class, root)
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
        mean=_channel_stats(layout.mean),
        std=_channel_stats(layout.std),
        classes=layout.classes,
    )


def load_mnist(root: str | os.PathLike | None = None, download: bool = False) -> InMemoryDataset:
    """MNIST (60,000 / 10,000) from ``<root>/MNIST/raw`` or IDX files in ``root``; no augmentation."""
    return _load_idx_dataset(_MNIST, root, download)


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = False) -> InMemoryDataset:
    """Fashion-MNIST (60,000 / 10,000) from ``<root>/FashionMNIST/raw``, IDX files in ``root``, or
    :data:`DEBIAN_FASHION_MNIST` when ``root`` has none; no augmentation."""
    return _load_idx_dataset(_FASHION_MNIST, root, download, fallback=DEBIAN_FASHION_MNIST)


# --------------------------------------------------------------------------------------------
# ImageNet: ImageFolder trees decoded by DataLoader workers
# --------------------------------------------------------------------------------------------


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
    """A dataset of image folders (ImageNet) streamed through a DataLoader; same interface as
    :class:`InMemoryDataset`.

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

    def _batches(self, folder: Any, train: bool, keys: list, batch_size: int, seed: int) -> Iterator[Batch]:
        from torch.utils.data import DataLoader

        loader = DataLoader(
            _SeededSamples(folder, self._transform(train)),
            batch_size=batch_size,
            sampler=keys,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(seed),  # leaves torch's global RNG alone
        )
        mean = _channel_stats(self.mean).to(self.device)
        std = _channel_stats(self.std).to(self.device)
        for x, y in loader:
            x = x.to(self.device, non_blocking=True).float().div_(255).sub_(mean).div_(std)
            yield x, y.to(self.device, non_blocking=True)

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
    root = _resolve_root(root)
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


Dataset = InMemoryDataset | ImageFolderDataset
Loader = Callable[..., Dataset]

DATASETS: dict[str, Loader] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "imagenet": load_imagenet,
}


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False, **options: Any) -> Dataset:
    """Load dataset ``name`` from ``root`` (downloading only if asked and possible).

    ``options`` go to the dataset's loader (e.g. ``num_workers`` for imagenet).
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](root=root, download=download, **options)
