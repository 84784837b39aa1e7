"""Cluster requests from the config (cost model and table), the user's SLURM settings, the GPU
lock folder and the preemption check; the workflow on a stand-in SLURM is tests/test_slurm.py."""

import sys
from pathlib import Path

import pytest
import yaml

from ticketalign import cluster, gpu
from ticketalign.config import load_config_files, load_schema, validate_config
from ticketalign.pruning import plan_imp

ROOT = Path(__file__).resolve().parents[1]
TABLE = cluster.load_cost_table(ROOT / "workflow/job_costs.tsv")
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def _config(path, **runtime):
    cfg = load_config_files([path])
    cfg.setdefault("runtime", {}).update(runtime)
    return validate_config(cfg, load_schema(ROOT / "workflow/schemas/config.schema.yaml"))


def _model(path=ROOT / "presets/cifar10_resnet20.yaml", **runtime):
    return cluster.CostModel(_config(path, **runtime), TABLE)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_has_its_own_row(preset):
    cfg = _config(preset)
    row = cluster.lookup(TABLE, cfg["model"]["name"], cfg["dataset"]["name"], "gpu")
    assert (row.model, row.dataset) == (cfg["model"]["name"], cfg["dataset"]["name"])  # not the "*" fallback


def test_only_jobs_that_use_a_gpu_ask_for_one():
    m = _model()
    wc = {"width": "1", "a": "0", "b": "100", "seed": "0", "sp": "0.8", "k": "0"}
    assert {r: m.request(r, wc).gpu for r in ("train_dense", "imp", "train_sparse", "permute_mask", "summarize")} \
        == {"train_dense": 1, "imp": 1, "train_sparse": 1, "permute_mask": 0, "summarize": 0}
    assert m.request("match", wc | {"method": "activation"}).gpu == 1
    assert m.request("match", wc | {"method": "weight"}).gpu == 0
    assert _model(device="cpu").request("train_dense", wc).gpu == 0


def test_requests_follow_the_work_grow_with_the_attempt_and_respect_the_cap():
    m = _model()
    small, wide = m.request("train_dense", {"width": "1"}), m.request("train_dense", {"width": "16"})
    assert wide.runtime > small.runtime and wide.mem_mb > small.mem_mb
    row = TABLE[("resnet20", "cifar10", "gpu")]
    assert small.expected_s == pytest.approx(cluster.STARTUP_S + 200 * (row.epoch_s + row.epoch_s_per_width2))
    k0, k100 = (m.request("train_sparse", {"width": "1", "k": k}) for k in ("0", "100"))
    assert k0.runtime > k100.runtime  # a run from epoch 100 trains half as long
    again = m.request("train_dense", {"width": "1"}, attempt=2)
    assert again.runtime >= 2 * small.runtime - 1 and again.mem_mb == pytest.approx(1.5 * small.mem_mb, abs=100)
    capped = _model(max_job_hours=0.5).request("train_sparse", {"width": "16", "k": "0"}, attempt=3)
    assert capped.runtime == 30


def test_imp_jobs_train_the_levels_the_chain_adds_for_their_target():
    m = _model()
    cfg = m.config
    plan = plan_imp(10**7, cfg["sparsities"], cfg["imp"]["prune_rate"])
    targets = sorted(cfg["sparsities"])
    per_job = [m.epochs("imp", {"sp": str(sp)}) / cfg["imp"]["train"]["epochs"] for sp in targets]
    chain = [0] + [plan.targets[sp][0] for sp in targets]  # levels the chain has after each target
    assert per_job == [after - before for before, after in zip(chain, chain[1:])]


def test_a_job_longer_than_the_cap_gets_enough_submissions():
    m = _model(ROOT / "presets/imagenet_resnet50.yaml")
    wc = {"width": "1", "k": "10"}
    n = m.submissions("train_sparse", wc)
    assert n > 1 and n * m.cap_minutes * 60 >= m.expected_seconds("train_sparse", wc) * cluster.SAFETY


def test_a_malformed_table_or_a_missing_row_names_the_file(tmp_path):
    bad = tmp_path / "costs.tsv"
    bad.write_text("model\tdataset\n")
    with pytest.raises(cluster.CostTableError, match="costs.tsv: the header must be"):
        cluster.load_cost_table(bad)
    with pytest.raises(cluster.CostTableError, match="no row for model 'mlp', dataset 'x'.*add one"):
        cluster.lookup({}, "mlp", "x", "gpu", "costs.tsv")


def test_settings_come_from_the_users_file_and_the_environment_wins(tmp_path):
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump({"partition": "short", "gpu_partition": "gpu", "account": "lab", "qos": "low",
                                    "gpu_model": "a100", "extra": "--signal=USR1@120"}))
    env = {cluster.SETTINGS_ENV: str(path), "TICKETALIGN_SLURM_QOS": "high"}
    settings = cluster.load_settings(env)
    assert settings["qos"] == "high" and settings["partition"] == "short"
    assert cluster.slurm_resources(settings, gpu=True) == {
        "slurm_partition": "gpu", "slurm_account": "lab", "qos": "high", "gpu_model": "a100",
        "slurm_extra": "--signal=USR1@120"}
    assert cluster.slurm_resources(settings, gpu=False)["slurm_partition"] == "short"
    assert "gpu_model" not in cluster.slurm_resources(settings, gpu=False)
    assert cluster.missing_settings_message(settings, env) is None
    path.write_text("partitoin: short\n")
    with pytest.raises(ValueError, match="unknown setting.*partitoin"):
        cluster.load_settings(env)


def test_a_missing_partition_says_what_to_set_and_where(tmp_path):
    env = {cluster.SETTINGS_ENV: str(tmp_path / "none.yaml")}
    message = cluster.missing_settings_message(cluster.load_settings(env), env)
    assert str(tmp_path / "none.yaml") in message and "TICKETALIGN_SLURM_PARTITION" in message
    assert "SNAKEMAKE_SLURM_PARTITIONS" in message
    assert cluster.missing_settings_message({}, env | {"SNAKEMAKE_SLURM_PARTITIONS": "p.yaml"}) is None


def test_gpu_locks_live_in_one_machine_wide_folder_not_tmpdir(monkeypatch, tmp_path):
    monkeypatch.delenv(gpu.LOCK_DIR_ENV, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert gpu.lock_dir() == gpu.DEFAULT_LOCK_DIR
    monkeypatch.setenv(gpu.LOCK_DIR_ENV, str(tmp_path / "locks"))
    assert gpu.lock_dir() == tmp_path / "locks"


def test_a_preempted_job_not_back_in_the_queue_is_reported_failed_and_cancelled(monkeypatch):
    sys.path.insert(0, str(ROOT / "workflow"))
    import slurm_support

    queue = {"11": "PENDING", "12": ""}  # 11 was requeued by SLURM, 12 is gone
    cancelled, warnings = [], []
    monkeypatch.setattr(slurm_support, "_squeue_state", lambda jobid: queue[jobid])
    monkeypatch.setattr(slurm_support.subprocess, "run", lambda argv, **kw: cancelled.append(argv))
    status = slurm_support.settle_preempted({"10": "RUNNING", "11": "PREEMPTED", "12": "PREEMPTED"}, warnings.append)
    assert status == {"10": "RUNNING", "11": "PREEMPTED", "12": "CANCELLED"}
    assert cancelled == [["scancel", "12"]] and "12" in warnings[0]
