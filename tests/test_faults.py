"""No wrong number reaches a table: every fault of issue 8, run the way a user meets it.

Where the workflow is the thing under test these are real ``snakemake`` runs on a shrunken digits
config (one seed pair, a 16-unit MLP, two epochs), on copies of one finished clean run. Each case
asserts that the job fails with one line naming the file, run or key; that no table row is made
from the bad input; and that the action the message (or the README's "When something goes
wrong") gives recovers a result equal to the clean run. Loader and guard details that need no
workflow are checked in-process.

1. divergence: the guard stops the job naming run, epoch, step and lr (dense and sparse);
2. a mask of another sparsity under a mask's name: refused by metadata, and by count;
3. corrupt or foreign artifacts (truncated, garbage, NaN weights, another width, kind, seed,
   epoch): named, with the producer to force; ``--forcerun <file>`` recovers;
4. a corrupt or mismatched IMP level cache: discarded with a log line and retrained;
5. every bad config: refused by ``snakemake -n`` in one line naming the key (repairs accepted);
6. recovery: kill -9 -> ``--unlock`` -> ``--rerun-incomplete``; a deleted intermediate -> ``--forcerun``.
(Point 7 and the report's refusal of non-finite metrics belong to the report code, tested there.)
"""

import json
import os
import random
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from workflow_runner import ROOT, job_counts, snakemake, snakemake_command

from ticketalign import cli
from ticketalign.artifacts import ArtifactError, load_artifact, save_artifact
from ticketalign.config import main as check_config_files
from ticketalign.guards import DivergenceError, DivergenceGuard
from ticketalign.masks import dense_masks, keep_for_sparsity, total_count
from ticketalign.models import build_model
from ticketalign.pruning import magnitude_prune
from ticketalign.train import TrainConfig, train

FAST = {
    "name": "faults",
    "dataset": {"name": "digits"},
    "model": {"name": "mlp", "widths": [1], "options": {"hidden": 16, "depth": 1}},
    "seed_pairs": [[0, 10]],
    "dense": {"epochs": 2, "lr": 0.1, "batch_size": 128},
    "imp": {"prune_rate": 0.5, "train": {"epochs": 1, "lr": 0.05, "batch_size": 128}},
    "sparsities": [0.5, 0.8],
    "rewind_epochs": [1],
    "matching": {"methods": ["activation"], "activation": {"batches": 2, "batch_size": 256}},
    "sparse": {"variants": ["lth", "naive", "permuted"], "train": {"epochs": 2, "lr": 0.1, "batch_size": 128}},
    "runtime": {"device": "cpu"},
    # the diagnostics consume the same artifacts through the same checked loaders; off, for speed
    "diagnostics": {"lmc": False, "mask_overlap": False, "diversity": False},
}
RES = "results/faults"
W = f"{RES}/w1"
MODEL_ARGS = Namespace(model="mlp", width=1.0, dataset="digits", model_options={"hidden": 16, "depth": 1})


def write_config(work: Path, cfg: dict | None = None, **replace_text: str) -> None:
    """``cfg`` (default FAST) as work/config.yaml; ``replace_text`` rewrites YAML text (``lr: 0.1`` -> ``lr: 1e6``)."""
    text = yaml.safe_dump(cfg or FAST, sort_keys=False)
    for old, new in replace_text.items():
        assert old in text, old
        text = text.replace(old, new)
    (work / "config.yaml").write_text(text)


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def errors(proc: subprocess.CompletedProcess) -> list[str]:
    """The one-line errors the failed jobs printed (the last line of each job's log)."""
    return sorted({line for line in output(proc).splitlines() if line.startswith("error: ")})


def forcerun_targets(lines: list[str]) -> list[str]:
    return sorted({t for line in lines for t in re.findall(r"`snakemake --forcerun (\S+)`", line)})


def table_files(work: Path) -> dict[str, str]:
    """summary.csv and table.md as text, without the one column that differs between identical
    runs: each run's wall time."""
    res, out = work / RES, {}
    for name in ("summary.csv", "table.md"):
        if (res / name).exists():
            out[name] = (res / name).read_text()
    if "summary.csv" in out:
        out["summary.csv"] = pd.read_csv(res / "summary.csv").drop(columns="wall_s").to_csv(index=False)
    return out


def tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """One finished run of FAST; tests work on copies of it."""
    work = tmp_path_factory.mktemp("clean")
    write_config(work)
    proc = snakemake(work, "--cores", "2")
    assert proc.returncode == 0, output(proc)[-4000:]
    return work


@pytest.fixture
def copy(clean, tmp_path_factory) -> Path:
    """A copy of the clean run that Snakemake sees as finished: mtimes kept, and as deep in the
    file system as the original (rules name the checkout's code by relative path)."""
    work = tmp_path_factory.mktemp("copy")
    shutil.copytree(clean, work, symlinks=True, dirs_exist_ok=True)
    return work


# --- 1. divergence ---------------------------------------------------------------------------------


def test_divergent_dense_training_fails_naming_the_run_and_writes_no_table(tmp_path):
    """dense.lr 1e6 (written as YAML's 1e6) no longer ends rc 0 with a chance-level table."""
    write_config(tmp_path, **{"dense:\n  epochs: 2\n  lr: 0.1": "dense:\n  epochs: 2\n  lr: 1e6"})
    proc = snakemake(tmp_path, "--cores", "2")
    assert proc.returncode != 0
    lines = errors(proc)
    assert lines, output(proc)[-3000:]
    pattern = (r"error: rule train_dense \(width 1, seed (0|10)\) diverged: training loss is (nan|inf) at "
               r"epoch 1/2, step \d+ \(lr [0-9.e+]+\); nothing was saved from it\. To fix: lower dense\.lr")
    assert all(re.match(pattern, line) for line in lines), lines
    assert not list((tmp_path / RES).rglob("metrics*.json")) and not table_files(tmp_path)


def test_divergent_sparse_training_adds_no_row_and_lowering_lr_gives_the_clean_table(clean, copy):
    write_config(copy, **{"lr: 0.1\n    batch_size: 128\nruntime": "lr: 1e6\n    batch_size: 128\nruntime"})
    proc = snakemake(copy, "--cores", "2")
    assert proc.returncode != 0
    lines = errors(proc)
    assert lines and all(re.match(
        r"error: rule train_sparse \(width 1, seeds 0-10, sparsity (0\.5|0\.8), k 1, run lth\) diverged: "
        r"training loss is (nan|inf) at epoch 1/1, step \d+ \(lr \S+\); .* lower sparse\.train\.lr", line)
        for line in lines), lines
    assert not list((copy / W / "pair0-10/sparse").rglob("metrics.json"))  # the failed jobs' outputs are gone
    assert table_files(copy) == table_files(clean)  # nothing was summarized from the diverged runs
    write_config(copy)  # the documented fix: a learning rate that trains
    fixed = snakemake(copy, "--cores", "2")
    assert fixed.returncode == 0, output(fixed)[-3000:]
    assert table_files(copy) == table_files(clean)


def test_the_guard_names_epoch_step_and_lr_and_checks_weights_and_buffers(digits):
    model = build_model("mlp", digits.input_shape, digits.num_classes, seed=0, hidden=16, depth=1)
    guard = DivergenceGuard(run="rule test (seed 0)", config_key="dense", check_every=3)
    with pytest.raises(DivergenceError) as err:
        train(model, digits, TrainConfig(epochs=2, lr=1e6, batch_size=128), seed=0, log=None, guard=guard)
    assert re.match(r"rule test \(seed 0\) diverged: training loss is (nan|inf) at epoch 1/2, step \d+ "
                    r"\(lr [0-9.e+]+\); nothing was saved from it\. To fix: lower dense\.lr", str(err.value))
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    net[1].running_var[0] = float("inf")  # a buffer, not a weight: the loss alone would not show it
    with pytest.raises(DivergenceError, match=r"not finite after epoch 3/5 .*1\.running_var \(0 NaN, 1 inf\)"):
        DivergenceGuard().end_of_epoch(net, epoch=2, epochs=5, step=30, lr=0.1)


# --- 2 and 3. artifacts that prove what they are ---------------------------------------------------


def test_wrong_and_corrupt_inputs_are_named_with_their_producer_and_forcerun_recovers(clean, copy):
    """A 80% mask under the 50% mask's name, and garbage in perm.pt: each consumer names the file
    and the rule that makes it; no table row is made; the suggested --forcerun gives the clean table."""
    shutil.copy(copy / W / "seed0/imp/mask_s0.8.pt", copy / W / "seed0/imp/mask_s0.5.pt")
    (copy / W / "pair0-10/activation/perm.pt").write_bytes(random.Random(0).randbytes(4096))
    proc = snakemake(copy, "--cores", "2", "--keep-going")
    assert proc.returncode != 0
    lines = errors(proc)
    mask, perm = f"{W}/seed0/imp/mask_s0.5.pt", f"{W}/pair0-10/activation/perm.pt"
    assert lines == [
        f"error: {perm}: not a ticketalign artifact (not a torch file at all); it is an output of rule match: "
        f"rebuild it with `snakemake --forcerun {perm}` (plus the options of your run)",
        f"error: {mask}: this mask was made for sparsity 0.8 where 0.5 was expected; it is an output of rule imp: "
        f"rebuild it with `snakemake --forcerun {mask}` (plus the options of your run)",
    ], output(proc)[-3000:]
    assert "weights_only" not in output(proc)  # torch's advice to load unsafely never reaches the user
    assert table_files(copy) == table_files(clean)
    fixed = snakemake(copy, "--cores", "2", "--forcerun", *forcerun_targets(lines))
    assert fixed.returncode == 0, output(fixed)[-3000:]
    assert table_files(copy) == table_files(clean)


def test_a_truncated_model_file_is_named_with_the_job_that_rebuilds_it(copy):
    """Matching meets a truncated final.pt: the error names it and the one job to force (its
    non-finite twin is refused the same way, see the in-process cases below)."""
    path = copy / W / "seed10/dense/final.pt"
    path.write_bytes(path.read_bytes()[:3000])
    proc = snakemake(copy, "--cores", "2")
    assert proc.returncode != 0
    rel = f"{W}/seed10/dense/final.pt"
    assert errors(proc) == [f"error: {rel}: truncated or corrupt: the zip archive torch writes is incomplete; it is an "
                            f"output of rule train_dense: rebuild it with `snakemake --forcerun {rel}` (plus the "
                            "options of your run)"], output(proc)[-3000:]
    # the suggested command reruns exactly that seed's dense training, then what was made from it
    plan = snakemake(copy, "-n", "--forcerun", rel)
    assert job_counts(output(plan)) == {"train_dense": 1, "match": 1, "permute_mask": 2, "train_sparse": 2,
                                        "summarize": 1, "plot": 1, "all": 1}


def _mask_of(width: float, sparsity: float) -> dict:
    model = build_model("mlp", (64,), 10, width=width, seed=0, hidden=16, depth=1)
    dense = dense_masks(model)
    return magnitude_prune(dict(model.named_parameters()), dense, keep_for_sparsity(total_count(dense), sparsity))


def test_a_mask_of_another_width_is_blamed_not_the_permutation(clean, tmp_path, capsys, monkeypatch):
    """permute_mask checks the mask against the rule's model before using the permutation with it."""
    bad = tmp_path / "mask_s0.8.pt"
    save_artifact(bad, "mask", _mask_of(0.5, 0.8), **vars(MODEL_ARGS) | {"width": 0.5, "seed": 0, "sparsity": 0.8})
    argv = ["permute_mask.py", "--dataset", "digits", "--model", "mlp", "--width", "1", "--model-options",
            json.dumps(MODEL_ARGS.model_options), "--seeds", "0", "10", "--sparsity", "0.8", "--mask", str(bad),
            "--methods", "activation", "--perms", str(clean / W / "pair0-10/activation/perm.pt"),
            "--outs", str(tmp_path / "out.pt")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "workflow/scripts/permute_mask.py"), run_name="__main__")
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {bad}: this mask was made for width 0.5 where 1.0 was expected; "
                          "it is an output of rule imp")
    assert not (tmp_path / "out.pt").exists()


def test_a_mask_whose_label_is_right_but_count_is_not_is_refused(tmp_path):
    path = tmp_path / "mask_s0.5.pt"
    save_artifact(path, "mask", _mask_of(1, 0.8), **vars(MODEL_ARGS) | {"seed": 0, "sparsity": 0.5})
    with pytest.raises(ArtifactError, match=r"keeps 237 of 1184 weights, but sparsity 0\.5 keeps exactly 592; "
                                            r"it is an output of rule imp"):
        cli.load_masks(str(path), MODEL_ARGS, seed=0, sparsity=0.5, producer="imp")


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", r"empty file \(an interrupted copy\?\)"),
        ("truncated", "truncated or corrupt: the zip archive torch writes is incomplete"),
        (b"hello world, not a model\n" * 4, r"not a ticketalign artifact \(not a torch file at all\)"),
        ("pickle", r"not a ticketalign artifact \(it holds Python objects that an artifact never holds\)"),
        ("plain", r"not a ticketalign artifact \(a torch file this pipeline did not write\)"),
        ("kind", "expected a 'model_state' artifact, found a 'mask'"),
        ("seed", "this model_state was made for seed 3 where 0 was expected"),
        ("epoch", "this model_state was made for epoch 2 where 1 was expected"),
        ("nan", r"weights are not finite \(layers\.0\.weight \(1 NaN, 0 inf\)\): the run that wrote it diverged"),
    ],
)
def test_every_unreadable_or_mismatched_artifact_is_one_error_naming_the_file(tmp_path, content, problem):
    good = tmp_path / "good.pt"
    model = build_model("mlp", (64,), 10, seed=0, hidden=16, depth=1)
    meta = vars(MODEL_ARGS) | {"seed": 0, "epoch": 1}
    save_artifact(good, "model_state", model.state_dict(), **meta)
    path = tmp_path / "ep1.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncated":
        path.write_bytes(good.read_bytes()[:-500])
    elif content == "pickle":
        torch.save({"kind": "model_state", "meta": meta, "data": Namespace()}, path)
    elif content == "plain":
        torch.save(model.state_dict(), path)
    elif content == "kind":
        save_artifact(path, "mask", dense_masks(model), **meta)
    elif content == "nan":  # what matching (and every other consumer of a model) refuses
        state = model.state_dict()
        state["layers.0.weight"][3, 5] = float("nan")
        save_artifact(path, "model_state", state, **meta)
    else:
        save_artifact(path, "model_state", model.state_dict(), **meta | {content: {"seed": 3, "epoch": 2}[content]})
    with pytest.raises(ArtifactError) as err:
        cli.load_model_state(str(path), MODEL_ARGS, seed=0, epoch=1)
    where = re.escape(str(path))
    assert re.fullmatch(rf"{where}: {problem}; it is an output of rule train_dense: rebuild it with "
                        rf"`snakemake --forcerun {where}` \(plus the options of your run\)", str(err.value))


# --- 4. the IMP level cache ------------------------------------------------------------------------


def test_unreadable_or_mismatched_imp_levels_are_discarded_and_retrained(clean, copy):
    levels = copy / W / "seed0/imp/levels"
    shutil.copy(levels / "level1.pt", levels / "level2.pt")  # another level's file under level 2's name
    (levels / "level1.pt").write_bytes((levels / "level1.pt").read_bytes()[:2000])  # truncated
    target = f"{W}/seed0/imp/mask_s0.8.pt"
    proc = snakemake(copy, "--forcerun", target, "--cores", "1", target)
    assert proc.returncode == 0, output(proc)[-3000:]
    log = (copy / RES / "logs/imp/w1_seed0_s0.8.log").read_text()
    assert (f"discarding {W}/seed0/imp/levels/level2.pt (it will be trained again): this imp_level was made for "
            "level 1 where 2 was expected") in log
    assert (f"discarding {W}/seed0/imp/levels/level1.pt (it will be trained again): truncated or corrupt") in log
    mask = load_artifact(copy / target, "mask")[0]
    assert tensors_equal(mask, load_artifact(clean / target, "mask")[0])


# --- 5. every config error before the first job ----------------------------------------------------

BAD_CONFIGS = {
    # case: (config changes as YAML text replacements, extra snakemake args, the one line expected)
    "model.options typo": (
        {"hidden: 16": "hiddn: 16"}, [],
        "config: unknown key 'model.options.hiddn' for model 'mlp'; allowed keys: hidden, depth"),
    "width a model cannot build": (
        {"name: digits": "name: cifar10", "name: mlp": "name: resnet20",
         "  options:\n    hidden: 16\n    depth: 1\n": "", "widths:\n  - 1": "widths:\n  - 1.1"}, [],
        "config: 'model.widths[0]' is 1.1; allowed values: widths resnet20 can be built with (resnet20 width 1.1 "
        "gives 17.6 channels for a base of 16;"),
    "CUDA device without CUDA": (
        {"device: cpu": "device: cuda:7"}, [],
        "config: 'runtime.device' is 'cuda:7'; allowed values: "),
    "non-integral epochs": (
        {"epochs: 2\n  lr: 0.1": "epochs: 2.5\n  lr: 0.1"}, [],
        "config: 'dense.epochs' is 2.5; expected type: integer"),
    "near-duplicate sparsities": (
        {"- 0.8": "- 0.5000001"}, [],
        "config: 'sparsities[1]' is 0.5000001, which shares the results folder s0.5 with 'sparsities[0]' (0.5); "
        "allowed values: numbers that differ within 6 significant digits"),
    "near-duplicate widths": (
        {"widths:\n  - 1": "widths:\n  - 1\n  - 1.0000001"}, [],
        "config: 'model.widths[1]' is 1.0000001, which shares the results folder w1 with 'model.widths[0]' (1); "),
    "key written twice": (
        {"rewind_epochs:": "sparsities: [0.9]\nrewind_epochs:"}, [],
        "config file {config}, line 27, column 1: key 'sparsities' appears twice in one mapping (first on line 24) "
        "(not valid YAML)"),
}
REPAIRED = {
    # integral floats become ints; YAML 1.2 floats are numbers; switching model.name drops the old options
    "epochs: 2\n  lr: 0.1": "epochs: 2.0\n  lr: 1e6",
    "rewind_epochs:\n- 1": "rewind_epochs:\n- 1.0",
    "- - 0\n  - 10": "- - 0\n  - 10.0",
}


def _launch(work: Path, *args: str, snakefile: Path = ROOT / "Snakefile") -> subprocess.Popen:
    return subprocess.Popen(snakemake_command(work, *args, snakefile=snakefile), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """Every dry run of this section, started at once: case -> (exit status, output, workdir)."""
    procs = {}
    for case, (changes, args, _) in BAD_CONFIGS.items():
        work = tmp_path_factory.mktemp("config")
        write_config(work, **changes)
        procs[case] = (_launch(work, "-n", *args), work)
    if torch.cuda.device_count() > 7:
        procs.pop("CUDA device without CUDA")[0].kill()
    repaired = tmp_path_factory.mktemp("repaired")
    write_config(repaired, **REPAIRED)
    procs["repaired"] = (_launch(repaired, "-n", "-p", "--config", "dataset={name: cifar10}",
                                 "model={name: resnet20}"), repaired)
    cluster = tmp_path_factory.mktemp("cluster")
    write_config(cluster, **{"device: cpu": "device: cuda:7"})
    procs["cluster"] = (_launch(cluster, "-n", "--workflow-profile", str(ROOT / "workflow/profiles/slurm")), cluster)
    # the embedded default config.yaml (no --configfile), broken, in a copy of the checkout
    checkout = tmp_path_factory.mktemp("checkout")
    for part in ("Snakefile", "workflow", "src"):
        copier = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
        copier(ROOT / part, checkout / part, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                                if copier is shutil.copytree else {}))
    text = (ROOT / "config.yaml").read_text().replace("  name: digits\n", "  name: digits\n   root: x: y\n", 1)
    (checkout / "config.yaml").write_text(text)
    work = tmp_path_factory.mktemp("default")
    procs["broken default"] = (_launch(work, "-n", snakefile=checkout / "Snakefile"), checkout)
    out = {}
    for case, (proc, work) in procs.items():
        text, _ = proc.communicate(timeout=600)
        out[case] = (proc.returncode, text, work)
    return out


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_a_bad_config_is_refused_by_a_dry_run_in_one_line_naming_the_key(dry_runs, case):
    if case not in dry_runs:
        pytest.skip("this machine has 8 CUDA devices")
    rc, text, work = dry_runs[case]
    expected = BAD_CONFIGS[case][2].format(config=work / "config.yaml")
    assert rc != 0
    lines = [line for line in text.splitlines() if line.startswith(("config:", "config file"))]
    assert len(lines) == 1 and lines[0].startswith(expected), text[-3000:]
    assert not (work / "results").exists() and "Job stats" not in text


def test_config_repairs_are_accepted_and_reach_the_jobs_as_clean_values(dry_runs):
    rc, text, _ = dry_runs["repaired"]
    assert rc == 0, text[-3000:]
    assert "--epochs 2 " in text and "--epochs 2.0" not in text  # integral floats are ints
    assert "--lr 1000000.0" in text  # YAML's 1e6 is a number
    assert f"{W}/pair0-10/" in text and "10.0" not in text
    assert "--model resnet20" in text and "--model-options '{}'" in text  # the MLP's options went with it


def test_a_cuda_device_is_left_to_the_jobs_when_they_run_on_a_cluster(dry_runs):
    rc, text, _ = dry_runs["cluster"]
    assert rc == 0, text[-3000:]


def test_a_broken_config_file_is_named_with_file_and_line(dry_runs, tmp_path, capsys):
    rc, text, checkout = dry_runs["broken default"]
    assert rc != 0
    line = (checkout / "config.yaml").read_text().splitlines().index("   root: x: y") + 1
    assert f"config file {checkout / 'config.yaml'}, line {line}, column 8: mapping values are not allowed here" in text
    # Snakemake reads a --configfile itself, before the workflow runs, and names neither file nor line;
    # the README points to this check, which does
    broken = tmp_path / "preset.yaml"
    broken.write_text("name: x\ndense:\n  epochs: 3\n   lr: 0.1\n")
    assert check_config_files([str(broken)]) == 1
    assert capsys.readouterr().out.strip() == (f"config file {broken}, line 4, column 6: mapping values are not "
                                               "allowed here (not valid YAML)")


# --- 6. recovery -----------------------------------------------------------------------------------


def test_after_kill_9_unlock_then_rerun_incomplete_give_the_clean_result(clean, copy):
    """Snakemake is killed while a sparse-training job runs; the job finishes on its own (as a
    cluster job would), leaving outputs Snakemake never recorded: the README's two steps recover."""
    res = copy / RES
    shutil.rmtree(copy / W / "pair0-10/sparse/s0.5")
    shutil.rmtree(res / "logs/sparse")
    for name in ("summary.csv", "table.md", "plots/accuracy_vs_sparsity.png"):
        (res / name).unlink()
    proc = subprocess.Popen(snakemake_command(copy, "--cores", "1"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (res / "logs/sparse").is_dir() or not any((res / "logs/sparse").iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "no sparse-training job started"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # Snakemake itself, not its job
    proc.wait()
    while time.monotonic() < deadline:  # the orphaned job runs to its end
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    # what a user meets: first the half-written outputs, then the lock of the killed run
    incomplete = snakemake(copy, "--cores", "2")
    assert incomplete.returncode != 0 and "--rerun-incomplete" in output(incomplete), output(incomplete)[-2000:]
    locked = snakemake(copy, "--cores", "2", "--rerun-incomplete")
    assert locked.returncode != 0 and "--unlock" in output(locked), output(locked)[-2000:]
    # the README's recovery: unlock, then rerun the incomplete jobs
    assert snakemake(copy, "--unlock").returncode == 0
    assert table_files(copy) == {}
    rerun = snakemake(copy, "--cores", "2", "--rerun-incomplete")
    assert rerun.returncode == 0, output(rerun)[-3000:]
    assert table_files(copy) == table_files(clean)


def test_a_deleted_intermediate_is_rebuilt_by_forcerun(clean, copy):
    target = f"{W}/pair0-10/activation/mask_s0.8.pt"
    (copy / target).unlink()
    dry = snakemake(copy, "-n")
    assert "Nothing to be done" in output(dry)  # Snakemake's rule: results made from it are still valid
    rebuilt = snakemake(copy, "--cores", "2", "--forcerun", target)
    assert rebuilt.returncode == 0, output(rebuilt)[-3000:]
    assert tensors_equal(load_artifact(copy / target, "mask")[0], load_artifact(clean / target, "mask")[0])
    assert table_files(copy) == table_files(clean)
