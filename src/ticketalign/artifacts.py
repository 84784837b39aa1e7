"""One way to save and load every artifact: atomically, with metadata that loading checks.

An artifact is ``{"kind": str, "meta": dict, "data": Any}`` saved with ``torch.save`` to a temp
file in the destination folder, then renamed over the destination: a crash never leaves a
half-written file under the final name, so Snakemake (and resuming code) can trust any file
that exists. ``load_artifact`` checks the kind and any metadata the caller expects, so a mask
for 90% sparsity can never be silently used where 95% was asked for.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


class ArtifactError(ValueError):
    """An artifact is missing, of the wrong kind, or was made for something else."""


def _atomic_write(path: str | os.PathLike, write) -> None:
    if not _writes_files():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _writes_files() -> bool:
    """In a multi-GPU job every process holds the same state: only rank 0 writes it
    (:mod:`ticketalign.distributed`), so no two processes race on one file."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def save_artifact(path: str | os.PathLike, kind: str, data: Any, **meta: Any) -> None:
    """Atomically save ``data`` (tensors, dicts of tensors, numbers) as an artifact of ``kind``."""
    payload = {"kind": kind, "meta": meta, "data": data}
    _atomic_write(path, lambda f: torch.save(payload, f))


def load_artifact(
    path: str | os.PathLike, kind: str, expect: Mapping[str, Any] | None = None, map_location: str = "cpu"
) -> tuple[Any, dict[str, Any]]:
    """Load an artifact, checking its kind and that ``meta[k] == v`` for each expected item."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such artifact (expected a {kind!r})")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or "kind" not in payload:
        raise ArtifactError(f"{path}: not a ticketalign artifact")
    if payload["kind"] != kind:
        raise ArtifactError(f"{path}: expected a {kind!r} artifact, found a {payload['kind']!r}")
    meta = payload["meta"]
    for key, want in (expect or {}).items():
        found = meta.get(key)
        if not _same(found, want):
            raise ArtifactError(f"{path}: metadata {key!r} is {found!r}, expected {want!r}")
    return payload["data"], meta


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-9
        except (TypeError, ValueError):
            return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode()))
