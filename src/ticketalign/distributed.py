"""Multi-GPU training jobs: one training job on G GPUs with DistributedDataParallel.

A job asks for G GPUs with ``runtime.gpus``. The script's process then relaunches itself under
``torchrun`` as G processes (:func:`launch`), or, when SLURM already started G tasks
(``srun --ntasks G``), each task joins the group from SLURM's variables (:func:`setup`).
Every process runs the same script: it builds the same data, model and recipe, and the training
loop asks :class:`Replicas` for three things only:

* its share of every *global* batch: the loop still draws ``train_batches(batch_size, seed,
  epoch)``, so the global batch, the data order and the augmentation stay pure functions of
  ``(seed, epoch)``; process ``r`` of ``G`` keeps the ``r``-th of ``G`` near-equal slices
  (ImageNet cuts its keys before decoding, so each GPU decodes only its own share);
* a loss weight ``G * n_local / n_global``: DistributedDataParallel averages gradients over the
  processes, so the weighted local means sum to the mean over the global batch, exactly the
  one-process gradient (up to float reordering), even when the last batch does not split evenly;
* sums of the epoch's statistics over the processes, so every process records the same history.

BatchNorm: on CUDA the model's BatchNorm layers become SyncBatchNorm, whose batch statistics
cover the global batch as on one GPU. PyTorch has no SyncBatchNorm on the CPU, so a
multi-process CPU run (gloo, for testing) normalizes a BN net over each process's slice.

Files: only rank 0 writes artifacts (:func:`is_main`; ``ticketalign.artifacts`` makes the same check);
checkpoints and resume are those of one process, since every process holds the same state.
Evaluation runs on every process over the whole test split (no communication, same numbers).
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ticketalign import gpu
from ticketalign.data import Batch, Dataset

#: what torchrun sets in each process it starts
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def world_size() -> int:
    """Processes in this job's group (1 when not distributed)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True in the process that writes files and logs: rank 0, or the only process."""
    return rank() == 0


def launched(slurm: bool = False) -> bool:
    """True when this process is one of several started by torchrun (or, with ``slurm``, by
    ``srun --ntasks G``) for one job. SLURM's variables count only when the job asked for
    several GPUs: every process of an allocation inherits them, a one-GPU job included."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return True
    return slurm and "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def launch(processes: int, argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    """Run this script again as ``processes`` processes under torchrun on this machine; their exit code.

    ``--standalone`` gives the group its own rendezvous on a free port, so several multi-GPU jobs
    can share a machine. ``env`` (e.g. ``CUDA_VISIBLE_DEVICES`` naming the GPUs this job
    claimed) is passed to every process.
    """
    argv = list(sys.argv if argv is None else argv)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *argv]
    return subprocess.run(cmd, env={**os.environ, **(env or {})}).returncode


def claim_gpus(count: int, device_name: str, log: Callable[[str], None] | None = None,
               poll_seconds: float = gpu.POLL_SECONDS) -> dict[str, str]:
    """Claim ``count`` whole GPUs for a multi-GPU job; the environment that shows its processes just those.

    Nothing is claimed on the CPU, for an explicit ``cuda:N``, or when exactly ``count`` GPUs are
    visible (a scheduler's allocation). Otherwise the GPUs are claimed all at once or not at
    all (a job holding some while waiting for more could deadlock with another such job): while
    fewer than ``count`` are free, the ones just claimed are given back and the claim retried.
    """
    if device_name not in ("auto", "cuda") or not torch.cuda.is_available():
        return {}
    visible = torch.cuda.device_count()
    if visible < count:
        raise RuntimeError(f"runtime.gpus is {count} but only {visible} GPUs are visible "
                           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); lower runtime.gpus")
    if visible == count:
        return {}
    keys = gpu.device_keys(visible)
    if any(k is None for k in keys):
        if log:
            log(f"{visible} GPUs visible but no stable names for them; using the first {count} unclaimed")
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, range(count)))}
    warned = False
    while True:
        slots: list[gpu.GpuSlot] = []
        for _ in range(count):
            slot = gpu.try_claim([k for k in keys if k not in {s.key for s in slots}])
            if slot is None:
                break
            slots.append(slot)
        if len(slots) == count:
            return {"CUDA_VISIBLE_DEVICES": ",".join(s.key for s in slots)}
        for slot in slots:
            slot.release()
        if log and not warned:
            log(f"waiting for {count} free GPUs of {visible}")
            warned = True
        time.sleep(poll_seconds)


def setup(device_name: str) -> torch.device:
    """Join this job's process group (torchrun's or SLURM's variables) and return this process's device.

    On CUDA each process trains on ``cuda:<local rank>`` of the GPUs it sees, with NCCL; with
    ``device_name`` ``cpu`` (or no CUDA under ``auto``) the processes use gloo on the CPU.
    """
    if "RANK" not in os.environ and "SLURM_PROCID" in os.environ:
        _env_from_slurm()
    missing = [v for v in TORCHRUN_ENV if v not in os.environ]
    if missing:
        raise RuntimeError(f"a multi-process job needs {', '.join(missing)} in the environment; start it with "
                           "torchrun, srun --ntasks G, or runtime.gpus (which starts torchrun itself)")
    local = int(os.environ["LOCAL_RANK"])
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device_name!r} requested but CUDA is not available; use --device auto or cpu")
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"process {local} of this job has no GPU: {torch.cuda.device_count()} visible "
                               f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                               "ask for at most as many processes (runtime.gpus) as GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not torch.distributed.is_initialized():
        kwargs = {"device_id": device} if use_cuda else {}
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo", **kwargs)
        atexit.register(shutdown)
    return device


def _env_from_slurm() -> None:
    """torchrun's variables from SLURM's, for ``srun --ntasks G`` jobs.

    The address of rank 0 is the node srun was launched from (where rank 0 runs in a one-node
    job) unless MASTER_ADDR is set; the port is derived from the job id so that jobs differ."""
    env = os.environ
    env["RANK"] = env["SLURM_PROCID"]
    env["WORLD_SIZE"] = env.get("SLURM_NTASKS", "1")
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env.setdefault("MASTER_ADDR", env.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
    env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))


def shutdown() -> None:
    """Leave the process group (at the end of a script), if one was joined.

    The ranks meet at a barrier first: on the GPU machine a rank whose peer had already torn
    the group down aborted at exit ("terminate called without an active exception") after
    finishing its work, failing the job although every file was written."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@dataclass(frozen=True)
class Replicas:
    """This process's place among the job's G processes, and what the training loop asks of it."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Replicas:
        """The running job's group: ``Replicas()`` (one process) unless a process group is joined."""
        return cls(rank(), world_size())

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to run training steps through: ``model`` itself, or DistributedDataParallel
        over it (sharing its parameters), with SyncBatchNorm on CUDA (module docstring)."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the BN layers in place
            return DistributedDataParallel(model, device_ids=[device])
        return DistributedDataParallel(model)

    def train_batches(self, data: Dataset, batch_size: int, seed: int, epoch: int) -> Iterator[tuple[Batch, float]]:
        """This process's share of each global training batch, with its loss weight (module docstring).

        A dataset with a ``shard`` field (ImageNet) cuts each global batch before decoding it;
        any other is sliced after gathering (in-memory batches are cheap to gather)."""
        if self.world == 1:
            for batch in data.train_batches(batch_size, seed=seed, epoch=epoch):
                yield batch, 1.0
            return
        n = data.num_train
        last = n - (math.ceil(n / batch_size) - 1) * batch_size
        if last < self.world:
            raise RuntimeError(f"the last batch of {last} samples cannot be shared by {self.world} processes; "
                               f"choose a batch size that leaves at least {self.world} samples in the last "
                               f"batch ({n} training samples, batch {batch_size})")
        if dataclasses.is_dataclass(data) and hasattr(data, "shard"):
            local = dataclasses.replace(data, shard=(self.rank, self.world))
            for i, (x, y) in enumerate(local.train_batches(batch_size, seed=seed, epoch=epoch)):
                yield (x, y), self.world * len(y) / min(batch_size, n - i * batch_size)
            return
        for x, y in data.train_batches(batch_size, seed=seed, epoch=epoch):  # gathered whole, then sliced
            n_global = len(y)
            x, y = x.tensor_split(self.world)[self.rank], y.tensor_split(self.world)[self.rank]
            yield (x, y), self.world * len(y) / n_global

    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """Each tensor summed over the processes (unchanged with one process)."""
        if self.world == 1:
            return list(values)
        out = []
        for v in values:
            v = v.clone()
            torch.distributed.all_reduce(v)
            out.append(v)
        return out

