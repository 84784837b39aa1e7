"""One way to save and load every artifact: atomically, with metadata that loading checks.

An artifact is ``{"kind": str, "meta": dict, "data": Any}`` saved with ``torch.save`` to a temp
file in the destination folder, then renamed over the destination: a crash never leaves a
half-written file under the final name, so Snakemake (and resuming code) can trust any file
that exists. ``load_artifact`` checks the kind and any metadata the caller expects, so a mask
for 90% sparsity can never be silently used where 95% was asked for. Every read goes through it
and every failure (missing, truncated, not an artifact, wrong kind, made for something else) is
one :class:`ArtifactError` naming the file and saying which job rebuilds it.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ticketalign.distributed import is_main


class ArtifactError(ValueError):
    """An artifact is missing, unreadable, not ours, of the wrong kind, or was made for something
    else: ``"<path>: <problem>; <what to do>"`` (:func:`remedy`), each part also an attribute."""

    def __init__(self, path: str | os.PathLike, problem: str, producer: str | None = None, fix: str | None = None):
        self.path, self.problem = Path(path), problem
        self.fix = fix if fix is not None else remedy(path, producer)
        super().__init__(f"{self.path}: {problem}" + (f"; {self.fix}" if self.fix else ""))


def _atomic_write(path: str | os.PathLike, write) -> None:
    if not is_main():  # a multi-GPU job's processes hold the same state: only rank 0 writes it
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


def save_artifact(path: str | os.PathLike, kind: str, data: Any, **meta: Any) -> None:
    """Atomically save ``data`` (tensors, dicts of tensors, numbers) as an artifact of ``kind``."""
    payload = {"kind": kind, "meta": meta, "data": data}
    _atomic_write(path, lambda f: torch.save(payload, f))


def load_artifact(
    path: str | os.PathLike,
    kind: str,
    expect: Mapping[str, Any] | None = None,
    map_location: str = "cpu",
    producer: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Load an artifact, checking that it is one, its kind, and ``meta[k] == v`` for each expected item.

    Every failure is an :class:`ArtifactError` naming the file and the problem: missing,
    truncated or corrupt, not a ticketalign artifact, the wrong kind, or metadata that differ from
    ``expect`` (what the file's path says it is). ``producer`` is the workflow rule that writes
    the file; the message then says how to rebuild it (:func:`remedy`).
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(path, f"no such file (expected a {kind!r} artifact)", producer)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, KeyError, ... here
        raise ArtifactError(path, _unreadable(path, err), producer) from None
    ours = isinstance(payload, dict) and set(payload) == {"kind", "meta", "data"} and isinstance(payload["meta"], dict)
    if not ours:
        raise ArtifactError(path, "not a ticketalign artifact (a torch file this pipeline did not write)", producer)
    if payload["kind"] != kind:
        raise ArtifactError(path, f"expected a {kind!r} artifact, found a {payload['kind']!r}", producer)
    meta = payload["meta"]
    wrong = {k: (meta.get(k), want) for k, want in (expect or {}).items() if not _same(meta.get(k), want)}
    if wrong:
        what = ", ".join(f"{k} {found!r} where {want!r} was expected" for k, (found, want) in wrong.items())
        raise ArtifactError(path, f"this {kind} was made for {what}", producer)
    return payload["data"], meta


def remedy(path: str | os.PathLike, producer: str | None) -> str:
    """What to do about a bad artifact: rebuild it with its producer's job (which reruns what was
    made from it too), or, for a file no rule makes, replace or delete it."""
    if producer:
        return (f"it is an output of rule {producer}: rebuild it with `snakemake --forcerun {path}` "
                f"(plus the options of your run)")
    return "replace it with the right file or delete it"


def _unreadable(path: Path, err: Exception) -> str:
    """Why torch could not read ``path``, in words (torch's own message may advise unsafe loading)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "empty file (an interrupted copy?)"
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        return "truncated or corrupt: the zip archive torch writes is incomplete"
    if not zipfile.is_zipfile(path):
        return "not a ticketalign artifact (not a torch file at all)"
    if isinstance(err, pickle.UnpicklingError):
        return "not a ticketalign artifact (it holds Python objects that an artifact never holds)"
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"corrupt ({type(err).__name__}: {first[:200]})"


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
