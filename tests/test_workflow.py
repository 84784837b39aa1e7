"""The real Snakefile, run with `snakemake` on a shrunken digits config in a temporary folder."""

import pandas as pd
import pytest
import torch
import yaml
from dataset_files import write_cifar
from workflow_runner import job_counts, snakemake

SMALL = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "model": {"name": "mlp", "widths": [1], "options": {"hidden": 32, "depth": 2}},
    "seed_pairs": [[0, 10], [1, 11]],
    "dense": {"epochs": 3, "lr": 0.05, "batch_size": 128},
    "imp": {"train": {"epochs": 1, "lr": 0.01, "batch_size": 128}},
    "sparsities": [0.5, 0.9],
    "rewind_epochs": [0, 1],
    "matching": {"methods": ["weight", "activation"], "activation": {"batches": 2, "batch_size": 128}},
    "sparse": {"variants": ["lth", "naive", "permuted", "random"], "train": {"epochs": 3, "lr": 0.05,
                                                                            "batch_size": 128}},
    "runtime": {"device": "cpu"},
}
RUNS = ["lth", "naive", "permuted_weight", "permuted_activation", "random"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    (work / "config.yaml").write_text(yaml.safe_dump(SMALL, sort_keys=False))
    proc = snakemake(work, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work


def test_every_expected_output_exists(finished):
    res = finished / "results" / "tiny"
    expected = [res / f for f in ("summary.csv", "table.md", "gains.csv", "environment.csv")]
    expected += [res / "plots" / f"{p}.png" for p in ("accuracy_vs_sparsity", "accuracy_vs_k", "gain")]
    expected += [res / "diagnostics" / f for f in ("diagnostics.md", "barriers.csv", "lmc.png", "mask_overlap.csv",
                                                   "mask_overlap.png", "diversity.csv")]
    for seed in (0, 1, 10, 11):
        expected += [res / f"w1/seed{seed}/dense/{f}" for f in ("final.pt", "ep0.pt", "ep1.pt", "metrics.json")]
    for a, b in ((0, 10), (1, 11)):
        for sp in ("0.5", "0.9"):
            expected.append(res / f"w1/seed{a}/imp/mask_s{sp}.pt")
            for method in ("weight", "activation"):
                expected += [res / f"w1/pair{a}-{b}/{method}/perm.pt", res / f"w1/pair{a}-{b}/{method}/mask_s{sp}.pt"]
            expected += [res / f"w1/pair{a}-{b}/sparse/s{sp}/k{k}/{run}/logits.pt" for k in (0, 1) for run in RUNS]
        expected += [res / f"w1/pair{a}-{b}/{f}.json" for f in ("lmc", "mask_overlap")]
    missing = [str(p.relative_to(finished)) for p in expected if not p.exists()]
    assert not missing
    assert list((res / "logs").rglob("*.log")) and list((res / "benchmarks").rglob("*.tsv"))
    assert not list(res.rglob("*.ckpt")), "checkpoints are removed once a job has finished"


def test_summary_has_every_run(finished):
    df = pd.read_csv(finished / "results/tiny/summary.csv", keep_default_na=False)
    df["run"] = df.apply(lambda r: f"{r.variant}_{r.match_method}" if r.match_method else r.variant, axis=1)
    got = set(zip(df.sparsity, df.rewind_epoch, df.run, df.seed_a))
    want = {(sp, k, run, a) for sp in (0.5, 0.9) for k in (0, 1) for run in RUNS for a in (0, 1)}
    assert got == want and len(df) == len(want)
    assert (abs(df.actual_sparsity - df.sparsity) < 1e-3).all()
    assert (df.epochs == 3 - df.rewind_epoch).all()
    assert df.test_acc.between(0, 100).all()
    assert (df.kept_weights > 0).all() and (df.wall_s > 0).all() and (df.train_loss >= 0).all()
    assert set(df.device) == {"cpu"} and set(df.threads) == {1}
    assert set(df.cpu_capability) == {torch.backends.cpu.get_cpu_capability()}
    table = (finished / "results/tiny/table.md").read_text()
    for label in ("lth", "naive", "permuted (weight)", "permuted (activation)", "random", "± "):
        assert label in table


def test_rerun_does_nothing_and_a_sparse_change_reruns_only_sparse_jobs(finished):
    again = snakemake(finished, "-n")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Nothing to be done" in again.stdout + again.stderr
    cfg = yaml.safe_load((finished / "config.yaml").read_text())
    # how to run and where the data live are not part of a result
    cfg["runtime"] = {"device": "cpu", "checkpoint_every": 2, "eval_every": 3}
    cfg["dataset"]["root"] = str(finished / "elsewhere")
    (finished / "config.yaml").write_text(yaml.safe_dump(cfg))
    same = snakemake(finished, "-n")
    assert "Nothing to be done" in same.stdout + same.stderr, same.stdout[-3000:]
    # a sparser target adds its own jobs only: the seeds' IMP chains continue from the cache
    (finished / "config.yaml").write_text(yaml.safe_dump({**cfg, "sparsities": [0.5, 0.9, 0.95]}))
    more = snakemake(finished, "-n")
    assert job_counts(more.stdout + more.stderr) == {
        "imp": 2, "permute_mask": 2, "train_sparse": 4, "summarize": 1, "plot": 1, "mask_overlap": 2,
        "diversity": 1, "diagnostics_report": 1, "all": 1}
    cfg["sparse"]["train"]["lr"] = 0.02
    (finished / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=True))  # key order changes too
    dry = snakemake(finished, "-n")
    assert dry.returncode == 0, dry.stderr[-2000:]
    jobs = job_counts(dry.stdout + dry.stderr)
    assert jobs == {"train_sparse": 8, "summarize": 1, "plot": 1, "diversity": 1, "diagnostics_report": 1,
                    "all": 1}, jobs


def test_the_report_is_one_page_with_every_figure_and_its_caption(finished):
    out = finished / "results/tiny/report.html"
    proc = snakemake(finished, "--report", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = out.read_text()
    for name in ("accuracy_vs_k.png", "gain.png", "lmc.png", "mask_overlap.png", "diversity.csv", "environment.csv",
                 "table.md", "diagnostics.md"):
        assert name in html, name
    assert "Look for" in html  # the captions say what to look for


def test_diagnostics_are_switched_by_the_config(tmp_path):
    cfg = {**SMALL, "diagnostics": {"lmc": False, "mask_overlap": True, "diversity": False}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    jobs = job_counts(snakemake(tmp_path, "-n").stdout)
    assert jobs["mask_overlap"] == 2 and jobs["diagnostics_report"] == 1
    assert "lmc" not in jobs and "diversity" not in jobs
    off = {"lmc": False, "mask_overlap": False, "diversity": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**cfg, "diagnostics": off}))
    dry = snakemake(tmp_path, "-n").stdout
    jobs = job_counts(dry)
    assert not {"lmc", "mask_overlap", "diversity", "diagnostics_report"} & set(jobs) and jobs["plot"] == 1
    assert "logits.pt" not in dry and "--save-logits false" in snakemake(tmp_path, "-n", "-p").stdout


def test_bad_config_stops_before_any_job(tmp_path):
    bad = {**SMALL, "sparsities": [0.5, 1.2]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(bad))
    proc = snakemake(tmp_path, "--cores", "1")
    assert proc.returncode != 0
    assert "'sparsities[1]' is 1.2; allowed values: > 0 and < 1" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


def test_resnet20_on_cifar_files_runs_end_to_end(tmp_path):
    """The same Snakefile on a ResNet20 (BatchNorm, shortcuts) with CIFAR-10 read from disk."""
    write_cifar(tmp_path / "data", "cifar10", py2=False, n_batch=12, n_test=8)
    cfg = {
        **SMALL,
        "name": "cifar",
        "dataset": {"name": "cifar10", "root": str(tmp_path / "data")},
        "model": {"name": "resnet20", "widths": [1]},
        "seed_pairs": [[0, 1]],
        "dense": {"epochs": 2, "lr": 0.05, "batch_size": 16},
        "imp": {"train": {"epochs": 1, "lr": 0.01, "batch_size": 16}},
        "sparsities": [0.6],
        "rewind_epochs": [1],
        "matching": {"methods": ["weight", "activation"], "activation": {"batches": 2, "batch_size": 16}},
        "sparse": {"variants": ["lth", "naive", "permuted"], "train": {"epochs": 2, "lr": 0.05, "batch_size": 16}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = tmp_path / "results" / "cifar"
    df = pd.read_csv(res / "summary.csv", keep_default_na=False)
    assert sorted(df.variant + df.match_method) == ["lth", "naive", "permutedactivation", "permutedweight"]
    mask = torch.load(res / "w1/seed0/imp/mask_s0.6.pt", weights_only=True)["data"]
    perm = torch.load(res / "w1/pair0-1/activation/perm.pt", weights_only=True)["data"]["perm"]
    permuted = torch.load(res / "w1/pair0-1/activation/mask_s0.6.pt", weights_only=True)["data"]
    assert {n: int(m.sum()) for n, m in mask.items()} == {n: int(m.sum()) for n, m in permuted.items()}
    # the stem conv's output channels move by the first stage's stream permutation
    assert torch.equal(permuted["conv1.weight"], mask["conv1.weight"][perm["layer1"]])
