"""Where dataset files live, how they get there, and the error when they are missing or broken.

Every format module resolves its root and downloads (only when asked) through here, so the
default location and the download are written once, and torchvision (~2 s to import) is
imported for the small datasets only here, only when a download is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

#: where datasets live when no root is given (the config schema's default too)
DEFAULT_ROOT = Path("resources/data")


class DatasetError(RuntimeError):
    """A dataset is missing, incomplete or unknown; the message says where and what to do."""


def resolve_root(root: str | os.PathLike | None) -> Path:
    """``root`` (``~`` expanded), or :data:`DEFAULT_ROOT` when it is None."""
    return DEFAULT_ROOT if root is None else Path(root).expanduser()


def torchvision_download(dataset_class: str, root: Path) -> None:
    """Fetch a dataset with torchvision into ``root`` (its usual layout). Imports torchvision."""
    import torchvision.datasets  # deferred on purpose: ~2 s per process

    try:
        getattr(torchvision.datasets, dataset_class)(root=str(root), train=True, download=True)
    except Exception as err:  # network, checksum or disk errors all mean the same to the user
        raise DatasetError(f"downloading {dataset_class} into {root} failed: {err}") from err
