"""One GPU per job on a multi-GPU machine, without a scheduler's help.

Snakemake's ``gpu`` resource only counts: ``--resources gpu=4`` lets four GPU jobs run at once,
but it never sets ``CUDA_VISIBLE_DEVICES``, so all four would train on ``cuda:0``. Here a job
that asks for ``auto``/``cuda`` while several GPUs are visible claims a free one: it takes an
exclusive, non-blocking ``flock`` on that GPU's lock file and keeps it for the life of the
process (the kernel drops it when the process ends, however it ends, so a crashed job never
leaves a GPU claimed). When every GPU is taken it polls until one frees up.

Lock files are named by the GPU's UUID, so two processes that see the same GPU under different
indices (different ``CUDA_VISIBLE_DEVICES``) still compete for it, and jobs of different
allocations never block each other. They live in ``$TICKETALIGN_GPU_LOCK_DIR`` or, by default,
:data:`DEFAULT_LOCK_DIR`: one folder for the whole machine, whoever runs the job. Not ``$TMPDIR``:
two jobs with different temp folders would each find their GPU free and share ``cuda:0``.

Small jobs leave a big GPU mostly idle, so ``runtime.jobs_per_gpu = N`` lets up to N jobs share
one: each GPU then has N lock files (slots), and ``--resources gpu=`` counts slots (GPUs x N).
Jobs fill every GPU's first slot before any GPU gets a second, so a partly busy machine still
spreads its jobs out. (Jobs of configs with different N share the slot files they have in common.)

When the choice is not ours, nothing is locked: ``cpu``, an explicit ``cuda:N``, or a single
visible GPU (what SLURM gives a job that requests one GPU; it sets ``CUDA_VISIBLE_DEVICES``).
Inside a scheduler's allocation with several GPUs (``snakemake --resources gpu=4`` within
``salloc --gpus=4``) jobs still need distinct GPUs, so they are locked too, by UUID only: the
indices there are relative to the allocation and would collide across allocations.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

LOCK_DIR_ENV = "TICKETALIGN_GPU_LOCK_DIR"
#: machine-wide (sticky and world-writable, like /tmp itself, so every user's jobs share it)
DEFAULT_LOCK_DIR = Path("/tmp/ticketalign-gpu-locks")
POLL_SECONDS = 2.0
#: environment variables that show a batch scheduler started this process
SCHEDULER_ENV = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested (runtime.device in the config, --device here) but CUDA is "
                           "not available on this machine; use auto or cpu")
    return device

@dataclass
class GpuSlot:
    """A claimed GPU: ``index`` in this process's numbering, the lock file and its open descriptor."""

    index: int
    key: str
    path: Path
    fd: int | None
    share: int = 0  # which of the GPU's jobs_per_gpu slots

    def release(self) -> None:
        """Give the GPU back (closing the descriptor drops the lock)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self in _HELD:
            _HELD.remove(self)


#: slots this process holds; kept referenced so their descriptors stay open until exit
_HELD: list[GpuSlot] = []


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)


def _lock_path(directory: Path, key: str, share: int = 0) -> Path:
    """The lock file of slot ``share`` of GPU ``key`` (slot 0 is the GPU's whole lock when N = 1)."""
    suffix = f".slot{share}" if share else ""
    return directory / f"ticketalign-gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}{suffix}.lock"


def _open_lock_file(path: Path) -> int:
    """Open (creating if needed) a lock file that every user can lock."""
    try:
        # an existing file first: opening another user's file with O_CREAT in a sticky /tmp is
        # refused where fs.protected_regular is set, even though flock on it would be fine
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        os.fchmod(fd, 0o666)  # umask may have narrowed it; another user must be able to open it
    except OSError:
        pass
    return fd


def try_claim(keys: Sequence[str], directory: str | Path | None = None, per_gpu: int = 1) -> GpuSlot | None:
    """Claim a free slot among ``keys`` (one per visible GPU, in index order), or None.

    Each GPU has ``per_gpu`` slots; the first free one in the order (slot 0 of every GPU, then
    slot 1 of every GPU, ...) is taken, so jobs share a GPU only when every GPU has a job."""
    if per_gpu < 1:
        raise ValueError(f"jobs per GPU must be at least 1, got {per_gpu} (runtime.jobs_per_gpu)")
    directory = Path(directory) if directory is not None else lock_dir()
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        if directory == DEFAULT_LOCK_DIR:
            try:
                directory.chmod(0o1777)  # the next user's jobs create their lock files here too
            except OSError:
                pass
    for share, (index, key) in ((j, ik) for j in range(per_gpu) for ik in enumerate(keys)):
        path = _lock_path(directory, key, share)
        fd = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                continue  # taken by another job
            raise
        slot = GpuSlot(index=index, key=key, path=path, fd=fd, share=share)
        _HELD.append(slot)
        return slot
    return None


def claim_slot(
    keys: Sequence[str],
    directory: str | Path | None = None,
    *,
    per_gpu: int = 1,
    poll_seconds: float = POLL_SECONDS,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
) -> GpuSlot:
    """Claim a free GPU slot, waiting (polling) while all are taken; TimeoutError after ``timeout`` s."""
    if not keys:
        raise ValueError("no GPUs to choose from")
    start = time.monotonic()
    warned = False
    slots = f" x {per_gpu} slots" if per_gpu > 1 else ""
    while True:
        slot = try_claim(keys, directory, per_gpu)
        if slot is not None:
            if warned and log:
                log(f"GPU {slot.index} is free after {time.monotonic() - start:.0f} s; using it")
            return slot
        if timeout is not None and time.monotonic() - start >= timeout:
            raise TimeoutError(
                f"all {len(keys)} GPUs{slots} stayed claimed by other jobs for {timeout:g} s "
                f"(lock files in {directory or lock_dir()}); run fewer GPU jobs at once (--resources gpu=N)"
            )
        if not warned and log:
            log(f"all {len(keys)} GPUs{slots} are claimed by other jobs (locks in {directory or lock_dir()}); waiting")
            warned = True
        time.sleep(poll_seconds)


def scheduler_assigned() -> bool:
    """True when a batch scheduler started this process and chose its visible GPUs."""
    return "CUDA_VISIBLE_DEVICES" in os.environ and any(v in os.environ for v in SCHEDULER_ENV)


def device_keys(count: int) -> list[str | None]:
    """A name for each visible GPU that is the same in every process: its UUID where known.

    Without a UUID, the GPU's entry in ``CUDA_VISIBLE_DEVICES`` (or its index when that is unset)
    names it; under a scheduler, where indices are relative to the allocation, it stays None.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = [e.strip() for e in visible.split(",")] if visible else None
    keys: list[str | None] = []
    for i in range(count):
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        if uuid is not None and str(uuid):
            keys.append(str(uuid))
        elif scheduler_assigned():
            keys.append(None)
        else:
            keys.append(entries[i] if entries and i < len(entries) else str(i))
    return keys


def select_device(
    name: str = "auto",
    *,
    jobs_per_gpu: int = 1,
    poll_seconds: float = POLL_SECONDS,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
) -> torch.device:
    """The device a job trains on; claims a free GPU (or one of its ``jobs_per_gpu`` slots) when
    several are visible (module docstring)."""
    device = resolve_device(name)
    if device.type != "cuda" or name not in ("auto", "cuda"):
        return device  # cpu, or a GPU the user named
    count = torch.cuda.device_count()
    if count <= 1:
        return torch.device("cuda", 0)
    keys = device_keys(count)
    if any(k is None for k in keys):
        if log:
            log(f"{count} GPUs visible but no stable names for them; not claiming one, using cuda:0")
        return torch.device("cuda", 0)
    slot = claim_slot(keys, per_gpu=jobs_per_gpu, poll_seconds=poll_seconds, timeout=timeout, log=log)
    torch.cuda.set_device(slot.index)
    if log:
        share = f", slot {slot.share + 1} of {jobs_per_gpu}" if jobs_per_gpu > 1 else ""
        log(f"claimed GPU {slot.index} of {count} ({slot.key}{share}; lock {slot.path})")
    return torch.device("cuda", slot.index)
