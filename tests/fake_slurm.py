#!/usr/bin/env python
"""A stand-in SLURM for tests: sbatch, squeue, sacct, scancel, srun, sinfo, scontrol, sacctmgr.

:func:`install` puts a script of each name on PATH that runs this file with the command's name.
State lives in ``$FAKE_SLURM_DIR``: ``sbatch.log`` (one submission per line, the plugin's whole
command line), ``jobs/<id>.json`` (each job's state) and ``faults.json``.

``sbatch`` starts each job at once, locally, under a supervisor process that records its state
(RUNNING, then COMPLETED or FAILED by exit status) and injects the faults listed in ``faults.json``:
``{"comment": <the job's --comment>, "state": TIMEOUT|PREEMPTED|NODE_FAIL|FAILED,
"when": [<file>, <regex>]}``. Once ``<file>`` matches (a rule's log reaching some epoch), the job
gets what SLURM gives it: TIMEOUT and PREEMPTED send SIGTERM to every process of the job and
SIGKILL ``grace_s`` seconds later (SLURM's KillWait); NODE_FAIL and FAILED kill it outright. Each
fault fires once. A PREEMPTED job is not requeued (PreemptMode=CANCEL). ``sbatch`` refuses a
partition not in ``$FAKE_SLURM_PARTITIONS`` as SLURM does.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "srun", "sinfo", "scontrol", "sacctmgr", "sshare")
FINAL = {"COMPLETED", "FAILED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "CANCELLED"}


def install(bin_dir: Path) -> None:
    """Put ``sbatch``, ``squeue``, ... into ``bin_dir``: each runs this file with its own name."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" {name} "$@"\n')
        script.chmod(0o755)


def state_dir() -> Path:
    return Path(os.environ["FAKE_SLURM_DIR"])


def _job_path(jobid: str) -> Path:
    return state_dir() / "jobs" / f"{jobid}.json"


def _load(jobid: str) -> dict:
    return json.loads(_job_path(jobid).read_text())


def _save(job: dict) -> None:
    path = _job_path(job["id"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(job))
    os.replace(tmp, path)


def _update(jobid: str, **changes) -> None:
    with open(state_dir() / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        job = _load(jobid)
        if job["state"] in FINAL and "state" in changes:
            changes.pop("state")  # a final state stays (a killed job's exit must not turn it FAILED)
        job.update(changes)
        _save(job)


def _jobs() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((state_dir() / "jobs").glob("*.json"))]


def sbatch(argv: list[str]) -> int:
    opts, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif arg.startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            key, value = arg.lstrip("-"), argv[i + 1]
            i += 1
        else:
            key, value = arg.lstrip("-"), True
        opts[key] = value
        i += 1
    with open(state_dir() / "sbatch.log", "a") as log:
        log.write(shlex.join(["sbatch", *argv]) + "\n")
    partitions = os.environ.get("FAKE_SLURM_PARTITIONS", "").split(",")
    if opts.get("p") not in partitions:
        print(f"sbatch: error: invalid partition specified: {opts.get('p')}", file=sys.stderr)
        return 1
    with open(state_dir() / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = state_dir() / "next_id"
        jobid = str(int(counter.read_text()) if counter.exists() else 1000)
        counter.write_text(str(int(jobid) + 1))
        (state_dir() / "jobs").mkdir(exist_ok=True)
        _save({"id": jobid, "name": opts.get("job-name"), "comment": opts.get("comment", ""),
               "wrap": opts["wrap"], "output": str(opts["output"]).replace("%j", jobid),
               "workdir": opts.get("D", os.getcwd()), "state": "PENDING", "requeue": "requeue" in opts})
    subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_supervise", jobid], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(jobid)
    return 0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _signal_all(pid: int, signum: int) -> None:
    for p in _descendants(pid):
        try:
            os.kill(p, signum)
        except ProcessLookupError:
            pass


def _claim_fault(comment: str) -> dict | None:
    """The first unfired fault for this job, marked fired."""
    path = state_dir() / "faults.json"
    with open(state_dir() / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        faults = json.loads(path.read_text()) if path.exists() else []
        for fault in faults:
            if not fault.get("fired") and fault["comment"] == comment:
                return fault
    return None


def _fire(fault: dict, jobid: str) -> None:
    path = state_dir() / "faults.json"
    with open(state_dir() / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        faults = json.loads(path.read_text())
        for f in faults:
            if f == fault:
                f["fired"], f["job"] = True, jobid
        path.write_text(json.dumps(faults))


def supervise(jobid: str) -> int:
    job = _load(jobid)
    env = dict(os.environ, SLURM_JOB_ID=jobid, SLURM_JOBID=jobid, SLURM_CPUS_PER_TASK="1")
    Path(job["output"]).parent.mkdir(parents=True, exist_ok=True)
    with open(job["output"], "w") as out:
        proc = subprocess.Popen(["bash", "-c", job["wrap"]], cwd=job["workdir"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    _update(jobid, state="RUNNING", pid=proc.pid)
    fault = _claim_fault(job["comment"])
    while proc.poll() is None:
        if fault is not None:
            file, pattern = fault["when"]
            try:
                hit = re.search(pattern, (Path(job["workdir"]) / file).read_text())
            except OSError:
                hit = None
            if hit:
                _fire(fault, jobid)
                _update(jobid, state=fault["state"])
                if fault["state"] in ("TIMEOUT", "PREEMPTED"):
                    _signal_all(proc.pid, signal.SIGTERM)
                    deadline = time.time() + fault.get("grace_s", 30)
                    while proc.poll() is None and time.time() < deadline:
                        time.sleep(0.05)
                _signal_all(proc.pid, signal.SIGKILL)
                fault = None
        time.sleep(0.02)
    _update(jobid, state="COMPLETED" if proc.returncode == 0 else "FAILED", exit_code=proc.returncode)
    return 0


def squeue(argv: list[str]) -> int:
    args = " ".join(argv)
    name = re.search(r"--name[ =](\S+)", args)
    ids = re.search(r"(?:--jobs|-j)[ =](\S+)", args)
    for job in _jobs():
        if name and job["name"] != name.group(1):
            continue
        if ids and job["id"] not in ids.group(1).split(","):
            continue
        if "--states=all" not in args and job["state"] in FINAL:
            continue  # finished jobs leave the queue
        print(f"{job['id']}|{job['state']}" if "%i" in args else job["state"])
    return 0


def sacct(argv: list[str]) -> int:
    args = " ".join(argv)
    if "nodelist" in args:
        print("fakenode1")
        return 0
    if "Reason" in args:
        print("None")
        return 0
    name = re.search(r"--name[ =](\S+)", args)
    for job in _jobs():
        if name is None or job["name"] == name.group(1):
            print(f"{job['id']}|{job['state']}")
    return 0


def scancel(argv: list[str]) -> int:
    for jobid in [a for a in argv if not a.startswith("-")]:
        if not _job_path(jobid).exists():
            continue
        job = _load(jobid)
        if job["state"] not in FINAL and job.get("pid"):
            _update(jobid, state="CANCELLED")
            _signal_all(job["pid"], signal.SIGKILL)
    return 0


def srun(argv: list[str]) -> int:
    while argv and argv[0].startswith("-"):
        argv = argv[1:]
    os.execvp(argv[0], argv)


def main() -> int:
    name, argv = sys.argv[1], sys.argv[2:]
    if name == "_supervise":
        return supervise(argv[0])
    if name == "sinfo":
        print("PARTITION\n" + "\n".join(os.environ.get("FAKE_SLURM_PARTITIONS", "").split(",")))
        return 0
    if name == "scontrol":
        print("MinJobAge               = 300 sec")
        return 0
    if name in ("sacctmgr", "sshare"):
        print(os.environ.get("FAKE_SLURM_ACCOUNT", "acct"))
        return 0
    return {"sbatch": sbatch, "squeue": squeue, "sacct": sacct, "scancel": scancel, "srun": srun}[name](argv)


if __name__ == "__main__":
    sys.exit(main())
