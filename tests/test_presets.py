"""The paper presets: each is a valid config whose DAG Snakemake builds, with the jobs its config implies.

What a preset *contains* is data (its comments cite the paper); these tests check what it *does*.
How fast the DAGs build is measured by benchmarks/bench_dag.py, not asserted here.
"""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ticketalign.config import ConfigError, load_schema, validate_config
from ticketalign.pruning import plan_imp

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))
PAPER = pd.read_csv(ROOT / "workflow/report/paper_results.csv")


def load(path: Path) -> dict:
    return validate_config(yaml.safe_load(path.read_text()), SCHEMA)


def test_there_is_a_preset_per_paper_table():
    names = {p.stem for p in PRESETS}
    assert {"cifar10_resnet20", "cifar100_resnet20", "cifar10_vgg11", "imagenet_resnet50",
            "fashion_mnist_mlp"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_and_names_its_results_folder_after_itself(path):
    cfg = load(path)
    assert cfg["name"] == path.stem


def _rewind_epochs(cfg: dict, width: str) -> list[int]:
    return cfg["rewind_epochs_by_width"].get(width, cfg["rewind_epochs"])


@pytest.mark.parametrize("path", [p for p in PRESETS if p.stem in set(PAPER.dataset + "_" + PAPER.model)],
                         ids=lambda p: p.stem)
def test_a_paper_preset_runs_settings_the_paper_reports(path):
    """Its table gets the paper's numbers beside its own: (width, sparsity, k) rows the paper has."""
    cfg = load(path)
    paper = PAPER[(PAPER.dataset == cfg["dataset"]["name"]) & (PAPER.model == cfg["model"]["name"])]
    reported = set(zip(paper.width, paper.sparsity, paper.rewind_epoch))
    runs = {(w, s, k) for w in cfg["model"]["widths"] for s in cfg["sparsities"] for k in _rewind_epochs(cfg, f"{w:g}")}
    assert runs & reported


def _expected_jobs(cfg: dict) -> dict[str, int]:
    """The jobs a config implies, from the data flow in ARCHITECTURE.md."""
    widths, pairs, sps = [f"{w:g}" for w in cfg["model"]["widths"]], cfg["seed_pairs"], cfg["sparsities"]
    permuted = "permuted" in cfg["sparse"]["variants"]
    jobs = {
        "train_dense": len(widths) * len({s for pair in pairs for s in pair}),
        "imp": len(widths) * len({a for a, _ in pairs}) * len(sps),
        "match": len(widths) * len(pairs) * len(cfg["matching"]["methods"]) * permuted,
        "permute_mask": len(widths) * len(pairs) * len(sps) * permuted,
        "train_sparse": len(pairs) * len(sps) * sum(len(_rewind_epochs(cfg, w)) for w in widths),
        "summarize": 1, "plot": 1, "all": 1,
    }
    diag = {"lmc": True, "mask_overlap": True, "diversity": True} | cfg.get("diagnostics", {})
    per_pair = len(widths) * len(pairs) * permuted  # lmc and mask overlap compare A, B and pi
    jobs |= {"lmc": per_pair * diag["lmc"], "mask_overlap": per_pair * diag["mask_overlap"],
             "diversity": int(diag["diversity"])}
    jobs["diagnostics_report"] = int(any(jobs[k] for k in ("lmc", "mask_overlap", "diversity")))
    jobs = {rule: n for rule, n in jobs.items() if n}
    return {**jobs, "total": sum(jobs.values())}


def _dry_run(*args: str) -> dict[str, int]:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--forceall", "--quiet", "rules", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M))
    return {k: int(v) for k, v in counts.items()}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_builds_a_dag_with_the_jobs_its_config_implies(path):
    profile = "slurm" if path.stem == "cifar10_resnet20" else "default"  # both profiles parse
    counts = _dry_run("--workflow-profile", f"workflow/profiles/{profile}", "--configfile", str(path))
    assert counts == _expected_jobs(load(path))


def test_the_cifar10_resnet20_dag_is_the_papers_grid():
    # 4 widths x 6 seeds; 4 x 3 chains x 4 targets; 4 x 3 pairs x 2 methods; 4 x 3 pairs x 4 targets;
    # 3 pairs x 4 sparsities x (9+9+5+5) k
    jobs = _expected_jobs(load(ROOT / "presets/cifar10_resnet20.yaml"))
    assert (jobs["train_dense"], jobs["imp"], jobs["match"], jobs["permute_mask"]) == (24, 48, 24, 48)
    assert jobs["train_sparse"] == 3 * 4 * (9 + 9 + 5 + 5)
    # diagnostics: lmc and mask overlap per width and pair (2 x 12), diversity and their report
    assert (jobs["lmc"], jobs["mask_overlap"], jobs["diversity"]) == (12, 12, 1) and jobs["total"] == 483 + 26


def test_one_imp_chain_trains_15_levels_for_the_paper_targets_not_49():
    # ResNet20 x1 has 268,336 prunable weights; the reference reruns IMP per target: 8+11+14+16
    targets = [0.8, 0.9, 0.95, 0.97]
    plan = plan_imp(268_336, targets, 0.2)
    assert plan.trained_levels == 15
    per_target = sum(plan_imp(268_336, [s], 0.2).trained_levels + 1 for s in targets)
    assert per_target == 49


@pytest.mark.parametrize(
    "by_width, message",
    [
        ({2: [0]}, "key 2 is not one of model.widths"),
        ({"1": [0], 1.0: [5]}, "names a width twice"),
        ({"4": [0, 200]}, "'rewind_epochs_by_width.4[1]' is 200"),
    ],
)
def test_bad_rewind_epochs_by_width_is_rejected(by_width, message):
    cfg = yaml.safe_load((ROOT / "presets/cifar10_resnet20.yaml").read_text())
    cfg["rewind_epochs_by_width"] = by_width
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(cfg, SCHEMA)
