# Paths, target lists and command-line helpers shared by every rule.
# The config is validated (and its defaults filled) here, before any job is scheduled.
import json
import os
import sys
from pathlib import Path

# The library of this checkout, installed or not, for this file and (PYTHONPATH) for every job's
# script: the code a rule declares as input (see lib() below) is the code that runs.
SRC = f"{workflow.basedir}/src"
sys.path.insert(0, SRC)
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p))
from snakemake.exceptions import WorkflowError
from ticketalign.config import ConfigError, load_config_files, load_schema, sparse_run_names, validate_config


def jobs_run_here():
    """Whether the jobs of this run execute on this machine, so that a CUDA `runtime.device` must
    exist here. False inside a job (a cluster job parses the Snakefile again, maybe on a CPU node)
    and when Snakemake was started with an executor other than local (`--executor slurm`, or
    `executor:` in a profile such as workflow/profiles/slurm): the executor is the one Snakemake's
    command line parsed, profiles included. Snakemake driven from Python (no command line): True.
    """
    if not workflow.is_main_process:
        return False
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "args_to_api" and frame.f_globals.get("__name__") == "snakemake.cli":
            return getattr(frame.f_locals.get("args"), "executor", None) in (None, "local")
        frame = frame.f_back
    return True


try:
    # config.yaml is the default; `--configfile A [B ...]` replaces it (a preset stands alone, later
    # files override earlier ones) and `--config KEY=VALUE` overrides single keys on top
    files = workflow.config_settings.configfiles or [Path(workflow.basedir) / "config.yaml"]
    config = load_config_files(files, workflow.config_settings.config)
    config = validate_config(
        config,
        load_schema(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"),
        jobs_run_here=jobs_run_here(),
    )
except ConfigError as err:
    raise WorkflowError(str(err)) from None

RESULTS = f"results/{config['name']}"
SCRIPTS = Path(os.path.relpath(Path(workflow.basedir) / "workflow" / "scripts"))
LIB = Path(workflow.basedir) / "src" / "ticketalign"


def lib(*parts):
    """Library sources a rule's results depend on: editing one reruns that rule's jobs.

    Paths are relative to the working directory, so moving the checkout with its results
    does not look like a change of inputs.
    """
    files = []
    for part in parts:
        files += sorted(LIB.glob(f"{part}/*.py")) if (LIB / part).is_dir() else [LIB / part]
    return [os.path.relpath(f) for f in files]


# what each stage computes with; the scripts themselves are inputs of their rules too
# (everything these import: cli.py brings distributed.py and gpu.py, models/ the permutation spec)
COMMON_CODE = lib(
    "artifacts.py", "cli.py", "config.py", "data", "distributed.py", "gpu.py", "guards.py", "models", "masks.py",
    "seeding.py", "permutation/__init__.py", "permutation/spec.py",
)
TRAIN_CODE = COMMON_CODE + lib("train.py", "preempt.py")
# software of every rule under --use-conda (the project itself comes from src/, see PYTHONPATH above)
CONDA_ENV = "../envs/ticketalign.yaml"
RUNTIME = config["runtime"]
# Snakemake never sets CUDA_VISIBLE_DEVICES: with `--resources gpu=N` it only limits how many
# GPU jobs run at once; each job then claims a free GPU itself (src/ticketalign/gpu.py).
# GPU rules declare gpu=1 unless the config pins the CPU; training rules gpu=runtime.gpus (a
# multi-GPU job). With runtime.jobs_per_gpu = N, gpu counts slots: --resources gpu=<GPUs x N>.
GPU = 0 if RUNTIME["device"] == "cpu" else 1


wildcard_constraints:
    width=r"[0-9.]+",
    seed=r"\d+",
    a=r"\d+",
    b=r"\d+",
    sp=r"[0-9.]+",
    k=r"\d+",
    method=r"weight|activation",


def fmt(x):
    """Numbers as they appear in paths: 1 -> '1', 0.95 -> '0.95'."""
    return f"{x:g}"


WIDTHS = [fmt(w) for w in config["model"]["widths"]]
SPARSITIES = [fmt(s) for s in sorted(config["sparsities"])]
PAIRS = [tuple(p) for p in config["seed_pairs"]]
METHODS = config["matching"]["methods"]
VARIANTS = config["sparse"]["variants"]
IMP_RESET = config["imp"]["mode"] == "reset"
# rewind epochs per width: rewind_epochs unless rewind_epochs_by_width lists the width
REWINDS_BY_WIDTH = {w: [str(k) for k in config["rewind_epochs_by_width"].get(w, config["rewind_epochs"])] for w in WIDTHS}
# every dense run saves the union (a rule's outputs cannot depend on the width wildcard)
SNAPSHOTS = sorted(
    {int(k) for ks in REWINDS_BY_WIDTH.values() for k in ks}
    | ({config["imp"]["reset_epoch"]} if IMP_RESET else set())
)
# sparse-training runs per (pair, sparsity, k): one directory each (ticketalign.experiment)
RUNS = [name for name, _, _ in sparse_run_names(VARIANTS, METHODS)]


def seed_dir(width, seed):
    return f"{RESULTS}/w{width}/seed{seed}"


def pair_dir(width, a, b):
    return f"{RESULTS}/w{width}/pair{a}-{b}"


def flags(options):
    """A config dict as command-line flags: {'weight_decay': 5e-4} -> '--weight-decay 0.0005'."""
    out = []
    for key, value in sorted(options.items()):  # key order in the YAML must not look like a change
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            value = str(value).lower()
        out.append(f"{flag} {value}")
    return " ".join(out)


def logged(command):
    """``command`` with its output in the rule's log; when it fails, the log's last line (the
    script's one-line ``error: ...``, naming the file or run and what to do) is shown too."""
    return f"{command} > {{log}} 2>&1 || (tail -n 1 {{log}} >&2; exit 1)"


def model_flags(width):
    opts = json.dumps(config["model"]["options"], sort_keys=True).replace(" ", "")
    return f"--model {config['model']['name']} --width {width} --model-options '{opts}'"


# Where the data are and how to run (device, checkpoints, ...) do not change what is computed,
# so they are not params (a change would rerun everything): they reach the scripts as
# environment variables, which ticketalign.cli reads as its defaults. Threads: each rule's own.
os.environ.update(
    TICKETALIGN_DATA_ROOT=str(config["dataset"]["root"]),
    TICKETALIGN_DOWNLOAD=str(config["dataset"]["download"]).lower(),
    TICKETALIGN_RUNTIME=json.dumps({k: v for k, v in RUNTIME.items() if k != "threads"}),
)


def sparse_metrics():
    return [
        f"{pair_dir(w, a, b)}/sparse/s{sp}/k{k}/{run}/metrics.json"
        for w in WIDTHS
        for a, b in PAIRS
        for sp in SPARSITIES
        for k in REWINDS_BY_WIDTH[w]
        for run in RUNS
    ]


def sparse_logits():
    """Every sparse run's test logits (train_sparse writes them beside metrics.json)."""
    return [str(Path(path).with_name("logits.pt")) for path in sparse_metrics()]


def permuted_masks(wc):
    """Inputs of train_sparse: A's mask permuted by each matching method (none without 'permuted')."""
    if "permuted" not in VARIANTS:
        return {}
    return {m: f"{pair_dir(wc.width, wc.a, wc.b)}/{m}/mask_s{wc.sp}.pt" for m in METHODS}


def previous_target_mask(wc):
    """IMP jobs of one seed run in order of sparsity, each continuing the chain cached on disk
    by the one before: a new, sparser target adds one job and reruns nothing else."""
    i = SPARSITIES.index(wc.sp)
    return [f"{seed_dir(wc.width, wc.seed)}/imp/mask_s{SPARSITIES[i - 1]}.pt"] if i else []


# The diagnostics (workflow/rules/diagnostics.smk), each switched by the config's `diagnostics`.
DIAG = config["diagnostics"] | {
    k: config["diagnostics"][k] and "permuted" in VARIANTS for k in ("lmc", "mask_overlap")
}
DIAG_DIR = f"{RESULTS}/diagnostics"
LMC_OPTIONS = {k: DIAG[k] for k in ("lmc_points", "bn_batches", "bn_batch_size")}


def per_pair(name):
    return [f"{pair_dir(w, a, b)}/{name}" for w in WIDTHS for a, b in PAIRS]


def diagnostics_outputs():
    """What the enabled diagnostics put in the report (rule all asks for these). Linear mode
    connectivity and mask overlap compare A and B through pi: they run with the permuted variant."""
    out = []
    if DIAG["lmc"]:
        out += [f"{DIAG_DIR}/barriers.csv", f"{DIAG_DIR}/lmc.png"]
    if DIAG["mask_overlap"]:
        out += [f"{DIAG_DIR}/mask_overlap.csv", f"{DIAG_DIR}/mask_overlap.png"]
    if DIAG["diversity"]:
        out += [f"{DIAG_DIR}/diversity.csv"]
    return out + [f"{DIAG_DIR}/diagnostics.md"] if out else []
