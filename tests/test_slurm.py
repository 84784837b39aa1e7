"""The workflow on SLURM: the real Snakefile and profile, snakemake-executor-plugin-slurm, and a
stand-in SLURM (tests/fake_slurm.py) that runs each job locally and injects a time limit and a
preemption, on a shrunken digits config.

One run, with a TIMEOUT (SIGTERM, then SIGKILL) in the middle of a dense training job and a
PREEMPTED (not requeued) in the middle of a sparse training job, is compared with an
uninterrupted local run of the same config.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import fake_slurm  # noqa: E402

# minutes, not seconds: deselected by default, `pytest -m slurm` runs it (CI does, see .ci/run)
pytestmark = pytest.mark.slurm


CONFIG = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "model": {"name": "mlp", "widths": [1], "options": {"hidden": 32, "depth": 2}},
    "seed_pairs": [[0, 10]],
    # the faults below fire at epoch 2: the jobs train long enough after it that the signal lands mid-run
    "dense": {"epochs": 10, "lr": 0.05, "batch_size": 32},
    "imp": {"train": {"epochs": 1, "lr": 0.01, "batch_size": 128}},
    "sparsities": [0.5, 0.8],
    "rewind_epochs": [0, 1],
    "matching": {"methods": ["weight", "activation"], "activation": {"batches": 2, "batch_size": 128}},
    "sparse": {"variants": ["lth", "naive", "permuted"], "train": {"epochs": 6, "lr": 0.05, "batch_size": 64}},
    # device auto: the requests are a GPU run's (the jobs still train on the CPU, CUDA is hidden);
    # no periodic checkpoint, so a resumed run can only have resumed from the one written at the signal
    "runtime": {"device": "auto", "threads": 1, "checkpoint_every": 1000, "max_job_hours": 0.1},
}
CAP_MINUTES = 6
LOG = "results/tiny/logs"
FAULTS = [
    {"comment": "rule_train_dense_wildcards_1_0", "state": "TIMEOUT",
     "when": [f"{LOG}/dense/w1_seed0.log", r"epoch +2/10"], "grace_s": 20},
    {"comment": "rule_train_sparse_wildcards_1_0_10_0.8_0", "state": "PREEMPTED",
     "when": [f"{LOG}/sparse/w1_pair0-10_s0.8_k0.log", r"epoch +2/6"], "grace_s": 20},
]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("TICKETALIGN_SLURM_", "SLURM_", "SNAKEMAKE_SLURM")):
            del env[key]
    env.update(
        PATH=f"{tmp / 'bin'}{os.pathsep}{env['PATH']}",
        FAKE_SLURM_DIR=str(tmp / "slurm"),
        FAKE_SLURM_PARTITIONS="cpu,gpu",
        TICKETALIGN_SLURM_CONFIG=str(tmp / "no-such-settings.yaml"),  # the user's own file stays out of it
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]),
        **extra,
    )
    return env


def _snakemake(work: Path, env: dict[str, str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    if shutil.which("snakemake") is None:
        pytest.fail("snakemake is not installed: pip install -e '.[test]'")
    cmd = ["snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile", str(work / "config.yaml"),
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=work)


def _setup(tmp: Path, name: str) -> Path:
    work = tmp / name
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    return work


SLURM_ARGS = ("--workflow-profile", str(ROOT / "workflow/profiles/slurm"),
              "--slurm-init-seconds-before-status-checks", "1", "--latency-wait", "5")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slurm")
    fake_slurm.install(tmp / "bin")
    (tmp / "slurm").mkdir()
    (tmp / "slurm" / "faults.json").write_text(json.dumps(FAULTS))
    reference = _setup(tmp, "local")
    proc = _snakemake(reference, _env(tmp), "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]

    cluster = _setup(tmp, "cluster")
    env = _env(tmp, TICKETALIGN_SLURM_PARTITION="cpu", TICKETALIGN_SLURM_GPU_PARTITION="gpu",
               TICKETALIGN_SLURM_ACCOUNT="acct")
    proc = _snakemake(cluster, env, *SLURM_ARGS)
    assert proc.returncode == 0, proc.stderr[-6000:]
    submissions = [shlex.split(line) for line in (tmp / "slurm" / "sbatch.log").read_text().splitlines()]
    faults = json.loads((tmp / "slurm" / "faults.json").read_text())
    return {"tmp": tmp, "reference": reference, "cluster": cluster, "submissions": submissions, "faults": faults,
            "stderr": proc.stderr}


def _opt(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _rule(argv: list[str]) -> str:
    return re.match(r"rule_(\w+?)(_wildcards_|$)", _opt(argv, "--comment")).group(1)


def test_each_rule_asks_for_what_it_uses(runs):
    by_rule: dict[str, list[list[str]]] = {}
    for argv in runs["submissions"]:
        by_rule.setdefault(_rule(argv), []).append(argv)
    # the seconds-long rules never go through the queue
    assert set(by_rule) == {"train_dense", "imp", "match", "train_sparse", "lmc"}
    for rule, submissions in by_rule.items():
        for argv in submissions:
            comment = _opt(argv, "--comment")
            uses_gpu = rule != "match" or comment.endswith("_activation")  # wildcards: width, a, b, method
            assert (_opt(argv, "--gpus") == "1") == uses_gpu, argv
            assert _opt(argv, "-p") == ("gpu" if uses_gpu else "cpu"), argv
            assert _opt(argv, "-A") == "acct"
            assert 1 <= int(_opt(argv, "-t")) <= CAP_MINUTES, argv  # the cap wins over the 10-min floor
            assert _opt(argv, "--cpus-per-task") == "1", argv  # runtime.threads
            # job_costs.tsv, mlp/digits/gpu: 4000 MB per training job, 2000 for weight matching; x1.5 on attempt 2
            mem = 4000 if uses_gpu else 2000
            assert int(_opt(argv, "--mem")) in (mem, mem * 3 // 2), argv
            assert "--requeue" in argv


def test_a_job_killed_at_its_time_limit_is_resubmitted_and_resumes_from_the_signal(runs):
    dense0 = [a for a in runs["submissions"] if _opt(a, "--comment") == FAULTS[0]["comment"]]
    assert len(dense0) == 2, "submitted once, then once more after the TIMEOUT"
    assert [int(_opt(a, "--mem")) for a in dense0] == [4000, 6000]  # the retry asks for more
    fault = runs["faults"][0]
    assert fault.get("fired"), "the time limit never hit the job"
    log = (runs["cluster"] / LOG / "dense/w1_seed0.log").read_text()
    # the retry's log: resumed mid-run from the checkpoint written at the SIGTERM (no other was written)
    resumed = re.search(r"resumed from \S+ at epoch (\d+), batch (\d+)", log)
    assert resumed, log[-2000:]
    assert 2 <= int(resumed.group(1)) < 10


def test_a_preempted_job_that_is_not_requeued_is_resubmitted(runs):
    sparse = [a for a in runs["submissions"] if _opt(a, "--comment") == FAULTS[1]["comment"]]
    assert runs["faults"][1].get("fired"), "the preemption never hit the job"
    assert len(sparse) == 2, "submitted once, then once more after the PREEMPTED"
    assert "preempted and not requeued" in runs["stderr"]
    log = (runs["cluster"] / LOG / "sparse/w1_pair0-10_s0.8_k0.log").read_text()
    assert re.search(r"resumed from \S+ at epoch \d+, batch \d+", log), log[-2000:]


def test_the_summary_equals_an_uninterrupted_run(runs):
    # every column but each run's wall time (which differs between any two runs)
    got = pd.read_csv(runs["cluster"] / "results/tiny/summary.csv").drop(columns="wall_s")
    want = pd.read_csv(runs["reference"] / "results/tiny/summary.csv").drop(columns="wall_s")
    assert got.to_csv(index=False) == want.to_csv(index=False)


def test_a_missing_partition_stops_before_any_submission(tmp_path):
    fake_slurm.install(tmp_path / "bin")
    (tmp_path / "slurm").mkdir()
    work = _setup(tmp_path, "work")
    proc = _snakemake(work, _env(tmp_path), *SLURM_ARGS, timeout=300)
    assert proc.returncode != 0
    assert "no partition is set" in proc.stderr and "TICKETALIGN_SLURM_PARTITION" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "slurm" / "sbatch.log").exists()


def test_a_dry_run_needs_no_cluster_settings(tmp_path):
    fake_slurm.install(tmp_path / "bin")
    work = _setup(tmp_path, "work")
    proc = _snakemake(work, _env(tmp_path), *SLURM_ARGS, "-n", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "slurm" / "sbatch.log").exists()
