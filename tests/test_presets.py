"""The paper presets: valid configs with the paper's settings, and DAGs Snakemake can build quickly."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ticketalign.config import ConfigError, load_schema, validate_config
from ticketalign.pruning import plan_imp

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))
PAPER_SPARSITIES = [0.8, 0.9, 0.95, 0.97]
LONG_SWEEP = [0, 5, 10, 15, 20, 25, 50, 75, 100]


def load(name: str) -> dict:
    return validate_config(yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text()), SCHEMA)


def test_there_is_a_preset_per_paper_table():
    names = {p.stem for p in PRESETS}
    assert {"cifar10_resnet20", "cifar100_resnet20", "cifar10_vgg11", "imagenet_resnet50",
            "fashion_mnist_mlp"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_and_names_its_results_folder_after_itself(path):
    cfg = validate_config(yaml.safe_load(path.read_text()), SCHEMA)
    assert cfg["name"] == path.stem
    assert len(cfg["seed_pairs"]) == 3
    assert set(cfg["matching"]["methods"]) == {"activation", "weight"}
    assert cfg["sparse"]["variants"] == ["lth", "naive", "permuted"]
    assert cfg["imp"]["mode"] == "ft"


@pytest.mark.parametrize("name", ["cifar10_resnet20", "cifar100_resnet20", "cifar10_vgg11"])
def test_cifar_presets_use_the_paper_recipe(name):
    cfg = load(name)
    recipe = {"momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128, "warmup_epochs": 0}
    assert cfg["dense"] == {"epochs": 200, "lr": 0.08, "nesterov": False, **recipe}
    assert cfg["imp"]["train"] == {"epochs": 50, "lr": 0.01, "nesterov": False, **recipe}
    assert cfg["imp"]["prune_rate"] == 0.2
    assert cfg["sparse"]["train"] == {"epochs": 200, "lr": 0.02, "nesterov": False, **recipe}
    assert cfg["sparsities"] == PAPER_SPARSITIES


def test_rewind_epochs_follow_the_paper_per_width():
    c10 = load("cifar10_resnet20")
    assert c10["model"]["widths"] == [1, 4, 8, 16]
    assert c10["rewind_epochs"] == [0, 10, 25, 50, 100]  # widths 8 and 16
    assert c10["rewind_epochs_by_width"] == {"1": LONG_SWEEP, "4": LONG_SWEEP}
    c100 = load("cifar100_resnet20")
    assert c100["rewind_epochs"] == [0, 10, 25, 50, 100] and c100["rewind_epochs_by_width"] == {}
    vgg = load("cifar10_vgg11")
    assert vgg["model"] == {"name": "vgg11", "widths": [1], "options": {}}
    assert vgg["rewind_epochs"] == [0, 10, 25, 50]  # k <= 50


def test_imagenet_preset_uses_the_paper_recipe():
    cfg = load("imagenet_resnet50")
    assert cfg["model"]["name"] == "resnet50" and cfg["model"]["widths"] == [1]
    dense = cfg["dense"]
    assert (dense["epochs"], dense["lr"], dense["batch_size"], dense["weight_decay"], dense["momentum"]) == (
        80, 0.4, 1024, 1e-4, 0.9)
    assert dense["warmup_epochs"] > 0
    assert cfg["imp"]["train"]["epochs"] == 20
    assert cfg["rewind_epochs"] == [10, 25, 50]
    assert cfg["sparse"]["train"]["epochs"] == 80
    assert cfg["dataset"]["root"] == "resources/data/imagenet"


def test_fashion_mnist_preset_is_the_small_check():
    cfg = load("fashion_mnist_mlp")
    assert cfg["model"]["options"] == {"hidden": 512, "depth": 2}
    assert cfg["dense"]["epochs"] == cfg["sparse"]["train"]["epochs"] == 6
    assert 0.93 in cfg["sparsities"]


def test_one_imp_chain_trains_15_levels_for_the_paper_targets_not_49():
    # ResNet20 x1 has 268,336 prunable weights; the reference reruns IMP per target: 8+11+14+16
    plan = plan_imp(268_336, PAPER_SPARSITIES, 0.2)
    assert plan.trained_levels == 15
    per_target = sum(plan_imp(268_336, [s], 0.2).trained_levels + 1 for s in PAPER_SPARSITIES)
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


def _dry_run(*args: str) -> tuple[dict[str, int], float]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--forceall", "--quiet", "rules", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M))
    return {k: int(v) for k, v in counts.items()}, elapsed


def test_cifar10_resnet20_dag_builds_quickly_with_the_slurm_profile():
    counts, elapsed = _dry_run("--workflow-profile", "workflow/profiles/slurm",
                               "--configfile", "presets/cifar10_resnet20.yaml")
    # 4 widths x 6 seeds; 4 x 3 chains x 4 targets; 4 x 3 pairs x 2 methods; 4 x 3 pairs x 4 targets;
    # 3 pairs x 4 sparsities x (9+9+5+5) k
    assert counts["train_dense"] == 24 and counts["imp"] == 48 and counts["match"] == 24
    assert counts["permute_mask"] == 48
    assert counts["train_sparse"] == 3 * 4 * (9 + 9 + 5 + 5)
    assert counts["total"] == 483
    assert elapsed < 30


def test_fashion_mnist_dag_builds_with_the_default_profile():
    counts, _ = _dry_run("--workflow-profile", "workflow/profiles/default",
                         "--configfile", "presets/fashion_mnist_mlp.yaml")
    assert counts["train_sparse"] == 3 * 3 * 2
