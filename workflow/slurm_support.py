"""Two gaps of snakemake-executor-plugin-slurm (2.x) closed from the workflow, in Snakemake's own process.

1. **A preempted job that SLURM does not requeue hangs the workflow.** The plugin reads the state
   PREEMPTED as "SLURM will resume it" and keeps waiting, which holds only where the cluster's
   PreemptMode is REQUEUE and the job may be requeued (the profile submits with ``--requeue``).
   With PreemptMode=CANCEL, or a job SLURM refuses to requeue, the job is gone for good and
   Snakemake waits forever. :func:`settle_preempted` asks ``squeue`` whether a PREEMPTED job is
   back in the queue; if it is not, it cancels whatever is left of it (so it cannot come back
   next to its resubmission) and reports it CANCELLED, a failure the plugin hands to Snakemake,
   which resubmits it (``retries``); training resumes from the checkpoint it wrote at the
   preemption's SIGTERM.
2. **A missing partition is found only at the first submission**, job after job. The check
   :func:`install` adds runs when the SLURM executor starts, before anything is submitted.

Both are installed by wrapping the plugin's status query and executor start-up; on a plugin
version without those names nothing is wrapped, and README.md ("Running on a cluster") says
what to run instead.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

#: squeue states of a job that is queued or running again (requeued after preemption, suspended)
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
               "COMPLETING", "SUSPENDED", "RESIZING", "STOPPED", "SIGNALING", "STAGE_OUT"}


def _squeue_state(jobid: str) -> str:
    try:
        out = subprocess.run(["squeue", "--noheader", "--jobs", jobid.split("_")[0].split(".")[0], "--format=%T"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"  # cannot tell: treat it as still queued, the next status check asks again
    return out.stdout.strip().splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else ""


def settle_preempted(status: dict[str, str], warn: Callable[[str], None]) -> dict[str, str]:
    """``status`` (job id -> state) with each PREEMPTED job that is not back in the queue made CANCELLED."""
    for jobid, state in status.items():
        if state != "PREEMPTED":
            continue
        queued = _squeue_state(jobid)
        if queued in LIVE_STATES or queued == "UNKNOWN":
            continue  # requeued by SLURM: it runs again under the same id
        subprocess.run(["scancel", jobid], capture_output=True, timeout=60)
        warn(f"SLURM job {jobid} was preempted and not requeued (PreemptMode CANCEL, or the job may not be "
             "requeued): reported as failed so that Snakemake submits it again; it resumes from its checkpoint")
        status[jobid] = "CANCELLED"
    return status


def install(check_settings: Callable[[object], str | None]) -> bool:
    """Wrap the plugin (once per process); False where it is absent or its names changed.

    ``check_settings(workflow)`` returns the message that stops the run, or None."""
    try:
        import snakemake_executor_plugin_slurm as plugin
    except ImportError:
        return False
    if getattr(plugin, "_ticketalign_wrapped", False):
        return True
    query, post_init = getattr(plugin, "query_job_status", None), getattr(plugin.Executor, "__post_init__", None)
    if query is None or post_init is None:
        return False

    async def query_job_status(command, logger):
        status, duration = await query(command, logger)
        if status:
            status = settle_preempted(status, logger.warning)
        return status, duration

    def checked_post_init(self, *args, **kwargs):
        message = check_settings(self.workflow)
        if message:
            from snakemake_interface_common.exceptions import WorkflowError

            raise WorkflowError(message)
        return post_init(self, *args, **kwargs)

    plugin.query_job_status = query_job_status
    plugin.Executor.__post_init__ = checked_post_init
    plugin._ticketalign_wrapped = True
    return True
