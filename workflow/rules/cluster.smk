# What each job asks a scheduler for (runtime, mem_mb, cpus_per_task, gpu: computed from the config
# by the cost model in src/ticketalign/cluster.py over the table workflow/job_costs.tsv), and the
# user's SLURM names (partition, account, ...; ~/.config/ticketalign/slurm.yaml or
# $TICKETALIGN_SLURM_*), added to every rule's resources. Nothing cluster-specific is tracked here.
sys.path.insert(0, f"{workflow.basedir}/workflow")
import slurm_support
from ticketalign.cluster import CostModel, load_cost_table, load_settings, missing_settings_message
from ticketalign.cluster import slurm_resources, uses_gres

COST_TABLE = Path(workflow.basedir) / "workflow" / "job_costs.tsv"
try:
    COSTS = CostModel(config, load_cost_table(COST_TABLE), os.path.relpath(COST_TABLE))
    SLURM = load_settings()
except ValueError as err:
    raise WorkflowError(str(err)) from None


def missing_partition(wf):
    """The message that stops a SLURM run without a partition; None when there is one, from the
    user's settings, the plugin's partition file or `--default-resources slurm_partition=...`."""
    defaults = wf.resource_settings.default_resources
    if defaults is not None and "slurm_partition" in defaults.keys():
        return None
    return missing_settings_message(SLURM)


# the SLURM executor refuses to start without a partition (one message, before any submission), and
# a preempted job that SLURM does not requeue is resubmitted (workflow/slurm_support.py)
if workflow.is_main_process:  # a job re-reading the Snakefile submits nothing
    slurm_support.install(missing_partition)


# seconds-long jobs run in Snakemake's own process, never through the queue
localrules:
    all,
    permute_mask,
    summarize,
    plot,
    mask_overlap,
    diversity,
    diagnostics_report,


def job_resources(rule):
    """Resources of every job of ``rule``: per job (wildcards) and growing with the attempt."""

    def request(name):
        return lambda wc, attempt: getattr(COSTS.request(rule, wc, attempt), name)

    def slurm(key):
        return lambda wc: slurm_resources(SLURM, COSTS.uses_gpu(rule, wc)).get(key, "")

    res = {name: request(name) for name in ("runtime", "mem_mb", "cpus_per_task")}
    keys = set(slurm_resources(SLURM, gpu=True)) | set(slurm_resources(SLURM, gpu=False))
    if uses_gres(SLURM):  # clusters without --gpus: --gres=gpu[:model]:1 instead of the gpu resource
        model = f"{SLURM['gpu_model']}:" if SLURM.get("gpu_model") else ""
        res["gres"] = lambda wc: f"gpu:{model}{COSTS.gpus(rule, wc)}" if COSTS.uses_gpu(rule, wc) else ""
        keys.discard("gpu_model")
    else:
        res["gpu"] = request("gpu")
    res.update({key: slurm(key) for key in sorted(keys)})
    return res


def job_retries(rule, jobs_wildcards):
    """Submissions beyond the first that the longest job of ``rule`` needs at runtime.max_job_hours,
    plus two (a failure, a preemption); None (the profile's `retries`) when every job fits one."""
    extra = max((COSTS.submissions(rule, wc) for wc in jobs_wildcards), default=1) - 1
    return extra + 2 if extra else None


# the longest job of each training rule: widest model, sparsest target, earliest rewind epoch
_WIDEST = {"width": max(WIDTHS, key=float)}
RETRIES = {
    "train_dense": job_retries("train_dense", [_WIDEST]),
    "imp": job_retries("imp", [_WIDEST | {"sp": sp} for sp in SPARSITIES]),
    "train_sparse": job_retries("train_sparse", [_WIDEST | {"k": min(map(int, ks))} for ks in REWINDS_BY_WIDTH.values()]),
}
