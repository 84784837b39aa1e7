"""What a job asks a batch scheduler for, and where the cluster's names come from.

**Requests.** A job's ``runtime`` (minutes), ``mem_mb``, ``cpus_per_task`` and ``gpu`` follow from
the config: the rule, the model and width, the dataset and the epochs it trains. Per-epoch
seconds and memory live in one table, ``workflow/job_costs.tsv`` (one row per model, dataset and
device, documented in its header); a first run's ``results/<name>/benchmarks/*.tsv`` give the
figures to correct it with (``workflow/scripts/cluster_cost.py --calibrate`` prints them).
Expected seconds are ``startup + epochs x (epoch_s + epoch_s_per_width2 x width^2)``; the request
adds :data:`SAFETY`, grows with the attempt (a retry after a time limit or an out-of-memory kill
asks for more), and never exceeds ``runtime.max_job_hours``: a longer job continues over several
submissions from the checkpoint it writes at the limit's SIGTERM (``ticketalign.preempt``),
and :meth:`CostModel.retries` says how many submissions that takes.

**Cluster names.** Partitions, account, QoS, GPU type and extra sbatch flags are the user's, not
the repository's: :func:`load_settings` reads them from ``$TICKETALIGN_SLURM_<KEY>`` variables or
the YAML file ``$TICKETALIGN_SLURM_CONFIG`` (default ``~/.config/ticketalign/slurm.yaml``).

This module imports neither torch nor Snakemake: the Snakefile evaluates it for every job.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

#: requests are this many times the expected time (the table's figures are one machine's)
SAFETY = 1.5
#: seconds every job spends before its first epoch: Python, torch, reading the data
STARTUP_S = 120.0
#: no request below this many minutes (schedulers round up; a short job still waits in the queue)
MIN_MINUTES = 10
#: memory of a job that trains nothing (weight matching, mask permutation, report)
SMALL_JOB_MB = 2000
#: rules that run torch with runtime.threads, on a GPU when the config allows one (match: only
#: activation matching); the others (mask permutation, the report) take one CPU and seconds
GPU_RULES = ("train_dense", "imp", "train_sparse", "match", "lmc")
TRAINING_RULES = ("train_dense", "imp", "train_sparse")  # these take runtime.gpus GPUs each
#: test split size as a share of the training split, for the LMC job's estimate (CIFAR 0.2, MNIST 0.17)
LMC_TEST_SHARE = 0.2
COLUMNS = ("model", "dataset", "device", "epoch_s", "epoch_s_per_width2", "mem_mb", "mem_mb_per_width2",
           "train_images", "source")


class CostTableError(ValueError):
    """The cost table is malformed or has no row for a model and dataset; the message says which."""


@dataclass(frozen=True)
class EpochCost:
    """One row of the cost table: one full epoch over the training split, per-epoch evaluation included."""

    model: str
    dataset: str
    device: str
    epoch_s: float
    epoch_s_per_width2: float
    mem_mb: float
    mem_mb_per_width2: float
    train_images: int
    source: str

    def epoch_seconds(self, width: float) -> float:
        return self.epoch_s + self.epoch_s_per_width2 * width**2

    def memory_mb(self, width: float) -> float:
        return self.mem_mb + self.mem_mb_per_width2 * width**2


def load_cost_table(path: str | Path) -> dict[tuple[str, str, str], EpochCost]:
    """The rows of a cost table (tab-separated, ``#`` comments, a header naming :data:`COLUMNS`)."""
    with open(path) as f:
        lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines, delimiter="\t")
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise CostTableError(f"{path}: the header must be {' '.join(COLUMNS)} (tab-separated), "
                             f"found {' '.join(reader.fieldnames or ())}")
    table = {}
    for i, row in enumerate(reader, start=2):
        try:
            cost = EpochCost(**{f.name: _CONVERT[f.type](row[f.name]) for f in fields(EpochCost)})
        except (TypeError, ValueError) as err:
            raise CostTableError(f"{path}: data row {i - 1} ({row}) is malformed: {err}") from None
        if cost.device not in ("cpu", "gpu"):
            raise CostTableError(f"{path}: data row {i - 1}: device is {cost.device!r}; allowed: cpu, gpu")
        table[(cost.model, cost.dataset, cost.device)] = cost
    return table


_CONVERT = {"str": str, "float": float, "int": int}


def lookup(table: Mapping[tuple[str, str, str], EpochCost], model: str, dataset: str, device: str,
           path: str | Path = "the cost table") -> EpochCost:
    """The row for (model, dataset, device); ``*`` rows match any model or dataset."""
    for key in ((model, dataset, device), (model, "*", device), ("*", dataset, device), ("*", "*", device)):
        if key in table:
            return table[key]
    raise CostTableError(f"{path} has no row for model {model!r}, dataset {dataset!r}, device {device!r}: "
                         "add one (its header says how to measure the figures)")


@dataclass(frozen=True)
class Request:
    """What one job asks the scheduler for; ``expected_s`` is the estimate before safety and attempt."""

    runtime: int
    mem_mb: int
    cpus_per_task: int
    gpu: int
    expected_s: float


class CostModel:
    """Requests for the jobs of one (validated) config; ``wildcards`` are a job's, as strings."""

    def __init__(self, config: Mapping[str, Any], table: Mapping[tuple[str, str, str], EpochCost],
                 table_path: str | Path = "the cost table"):
        self.config, self.table, self.table_path = config, table, table_path
        self.cap_minutes = int(config["runtime"]["max_job_hours"] * 60)
        self.on_gpu = config["runtime"]["device"] != "cpu"
        self.threads = int(config["runtime"]["threads"])
        self.gpus_per_job = int(config["runtime"]["gpus"])  # multi-GPU training jobs (DistributedDataParallel)

    def uses_gpu(self, rule: str, wildcards: Mapping[str, str]) -> bool:
        """Weight matching and the small jobs run on the CPU whatever the device."""
        if not self.on_gpu or rule not in GPU_RULES:
            return False
        return rule != "match" or wildcards.get("method") == "activation"

    def cost(self, gpu: bool) -> EpochCost:
        cfg = self.config
        return lookup(self.table, cfg["model"]["name"], cfg["dataset"]["name"], "gpu" if gpu else "cpu",
                      self.table_path)

    def epochs(self, rule: str, wildcards: Mapping[str, str]) -> float:
        """Full passes over the training split a job makes (forward-only passes count a third)."""
        cfg = self.config
        if rule == "train_dense":
            return cfg["dense"]["epochs"]
        if rule == "imp":
            return cfg["imp"]["train"]["epochs"] * self._new_imp_levels(float(wildcards["sp"]))
        if rule == "train_sparse":
            variants = cfg["sparse"]["variants"]
            runs = sum(v in variants for v in ("lth", "naive", "random"))
            runs += len(cfg["matching"]["methods"]) if "permuted" in variants else 0
            return runs * (cfg["sparse"]["train"]["epochs"] - int(wildcards["k"]))
        if rule == "match" and wildcards.get("method") == "activation":
            act = cfg["matching"]["activation"]
            images = min(act["batches"] * act["batch_size"], self.cost(self.on_gpu).train_images)
            return 2 * images / max(self.cost(self.on_gpu).train_images, 1) / 3  # two models, forward only
        if rule == "lmc":  # every point of every line: BN statistics re-estimated, then the test split
            diag, train_images = cfg["diagnostics"], max(self.cost(self.on_gpu).train_images, 1)
            lines = 1 + len(cfg["matching"]["methods"])  # A<->B, and pi(A)<->B per matching method
            images = diag["bn_batches"] * diag["bn_batch_size"] + LMC_TEST_SHARE * train_images
            return lines * diag["lmc_points"] * images / train_images / 3  # forward only
        return 0.0

    def _new_imp_levels(self, sp: float) -> int:
        """Levels the IMP job of target ``sp`` trains: those the next-lower target did not need."""
        rate = self.config["imp"]["prune_rate"]

        def levels(s: float) -> int:  # levels that keep more than 1 - s of the weights (ticketalign.pruning)
            return max(0, math.ceil(math.log(1 - s) / math.log(1 - rate) - 1e-9) - 1)

        lower = [s for s in self.config["sparsities"] if s < sp]
        return levels(sp) - (levels(max(lower)) if lower else 0)

    def expected_seconds(self, rule: str, wildcards: Mapping[str, str]) -> float:
        epochs = self.epochs(rule, wildcards)
        if not epochs:
            return STARTUP_S
        width = float(wildcards.get("width", 1))
        seconds = epochs * self.cost(self.uses_gpu(rule, wildcards)).epoch_seconds(width)
        return STARTUP_S + seconds / max(1, self.gpus(rule, wildcards))

    def gpus(self, rule: str, wildcards: Mapping[str, str]) -> int:
        """GPUs of one job: runtime.gpus for training on a GPU, one for activation matching, else none."""
        if not self.uses_gpu(rule, wildcards):
            return 0
        return self.gpus_per_job if rule in TRAINING_RULES else 1

    def request(self, rule: str, wildcards: Mapping[str, str], attempt: int = 1) -> Request:
        """The job's request; attempt N asks for N times the time and 1 + (N - 1)/2 times the memory."""
        gpu = self.uses_gpu(rule, wildcards)
        expected = self.expected_seconds(rule, wildcards)
        gpus = self.gpus(rule, wildcards)
        minutes = max(MIN_MINUTES, math.ceil(expected * SAFETY * attempt / 60))
        trains = self.epochs(rule, wildcards) > 0
        mem = self.cost(gpu).memory_mb(float(wildcards.get("width", 1))) if trains else SMALL_JOB_MB
        mem *= 1 + (attempt - 1) / 2
        return Request(runtime=min(minutes, self.cap_minutes), mem_mb=int(math.ceil(mem / 100) * 100),
                       cpus_per_task=self.threads if rule in GPU_RULES else 1, gpu=gpus, expected_s=expected)

    def submissions(self, rule: str, wildcards: Mapping[str, str]) -> int:
        """Submissions the job needs when each may run ``max_job_hours`` (its request is capped)."""
        return max(1, math.ceil(self.expected_seconds(rule, wildcards) * SAFETY / (self.cap_minutes * 60)))


# ---------------------------------------------------------------------------------------------
# The user's cluster settings
# ---------------------------------------------------------------------------------------------

SETTINGS_ENV = "TICKETALIGN_SLURM_CONFIG"
DEFAULT_SETTINGS_FILE = Path("~/.config/ticketalign/slurm.yaml")
#: key -> what it is; each is also read from $TICKETALIGN_SLURM_<KEY>, which wins over the file
SETTINGS = {
    "partition": "partition of the CPU jobs (and of every job unless gpu_partition is set)",
    "gpu_partition": "partition of the GPU jobs",
    "account": "account charged (-A); without it the plugin guesses it with sacctmgr",
    "qos": "quality of service (--qos)",
    "gpu_model": "GPU type, e.g. a100: asks for --gpus=a100:1",
    "gpu_gres": "true on clusters that know --gres but not --gpus: asks for --gres=gpu[:model]:1",
    "extra": "more sbatch flags for every job, e.g. '--signal=USR1@120 --constraint=ib'",
    "gpu_extra": "more sbatch flags for the GPU jobs only",
}


def settings_file(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(SETTINGS_ENV) or DEFAULT_SETTINGS_FILE).expanduser()


def load_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The user's cluster settings: the settings file, then ``$TICKETALIGN_SLURM_<KEY>`` on top."""
    path = settings_file(environ)
    values: dict[str, Any] = {}
    if path.exists():
        import yaml

        with open(path) as f:
            values = yaml.safe_load(f) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of settings ({', '.join(SETTINGS)})")
        unknown = sorted(set(values) - set(SETTINGS))
        if unknown:
            raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(SETTINGS)}")
    for key in SETTINGS:
        env = environ.get(f"TICKETALIGN_SLURM_{key.upper()}")
        if env is not None:
            values[key] = env
    return {k: str(v) for k, v in values.items() if v is not None and str(v) != ""}


def slurm_resources(settings: Mapping[str, str], gpu: bool) -> dict[str, Any]:
    """The plugin's resources for one job (``slurm_partition``, ``slurm_account``, ``qos``, GPU type,
    ``slurm_extra``); none of them when the setting is absent, so a profile's defaults still apply."""
    out: dict[str, Any] = {}
    partition = settings.get("gpu_partition" if gpu else "partition") or settings.get("partition")
    if partition:
        out["slurm_partition"] = partition
    if "account" in settings:
        out["slurm_account"] = settings["account"]
    if "qos" in settings:
        out["qos"] = settings["qos"]
    if gpu and settings.get("gpu_model"):
        out["gpu_model"] = settings["gpu_model"]
    extra = " ".join(settings[k] for k in ("extra", "gpu_extra") if settings.get(k) and (k == "extra" or gpu))
    if extra:
        out["slurm_extra"] = extra
    return out


def uses_gres(settings: Mapping[str, str]) -> bool:
    return settings.get("gpu_gres", "").lower() in ("1", "true", "yes")


def missing_settings_message(settings: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> str | None:
    """None when every job has a partition; otherwise one message saying what to set and where."""
    if "partition" in settings or environ.get("SNAKEMAKE_SLURM_PARTITIONS"):
        return None  # with the plugin's partition file, the plugin picks each job's partition
    path = settings_file(environ)
    return (
        "SLURM: no partition is set, so nothing was submitted. Set it once for this machine, outside the "
        f"repository, in {path} (or the file named by ${SETTINGS_ENV}):\n"
        "    partition: <partition for CPU jobs, and for GPU jobs without gpu_partition>\n"
        "    gpu_partition: <partition for GPU jobs>   # optional\n"
        "    account: <account>                        # if your cluster wants -A\n"
        "or as environment variables TICKETALIGN_SLURM_PARTITION (TICKETALIGN_SLURM_GPU_PARTITION, "
        "TICKETALIGN_SLURM_ACCOUNT, ...), or let the plugin choose each job's partition from a partition "
        "limits file: export SNAKEMAKE_SLURM_PARTITIONS=<file>. `sinfo -s` lists the partitions; "
        "README.md, 'Running on a cluster', has the whole setup."
    )
