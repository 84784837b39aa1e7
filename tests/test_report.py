"""Runs -> summary rows -> mean ± std table (with the paper's numbers) -> gains, claims, plots."""

import json
import math

import pandas as pd
import pytest

from ticketalign.report import (
    SUMMARY_COLUMNS,
    ReportError,
    barrier_table,
    check_claims,
    collect_runs,
    diagnostics_markdown,
    environment_table,
    gains,
    insert_table,
    markdown_table,
    overlap_table,
    plot_accuracy,
    plot_accuracy_vs_k,
    plot_gain,
    plot_lmc,
    plot_mask_overlap,
)

ENV = {"torch": "2.14.1", "cpu_capability": "AVX2", "device": "cpu", "threads": 1, "python": "3.12", "machine": "x"}


def _run(variant, seed_a, acc, train_acc=99.0, sparsity=0.97, k=50, **extra):
    return {
        "dataset": "cifar10", "model": "resnet20", "width": 1.0, "seed_a": seed_a, "seed_b": 10 + seed_a,
        "sparsity": sparsity, "rewind_epoch": k, "variant": variant,
        "match_method": "activation" if variant == "permuted" else "", "test_acc": acc, "test_loss": 0.5,
        "train_acc": train_acc, "train_loss": 0.01, "actual_sparsity": sparsity, "kept_weights": 8100, "epochs": 150,
        "wall_s": 12.5, "environment": ENV, "history": [], **extra,
    }


def _write(tmp_path, runs):
    files = []
    for i, run in enumerate(runs):
        path = tmp_path / f"run{i}.json"
        path.write_text(json.dumps(run))
        files.append(path)
    return files


def _write_runs(tmp_path):
    accs = {"lth": [90.0, 92.0], "naive": [80.0, 84.0], "permuted": [88.0, 86.0]}
    trains = {"lth": [100.0, 99.0], "naive": [90.0, 92.0], "permuted": [97.0, 98.0]}
    return _write(tmp_path, [_run(v, s, acc, trains[v][s]) for v, vals in accs.items() for s, acc in enumerate(vals)])


def _cells(table):
    header, _, *rows = table.strip().splitlines()[2:]
    columns = [c.strip() for c in header.strip("|").split("|")]
    return [dict(zip(columns, [c.strip() for c in row.strip("|").split("|")])) for row in rows]


PAPER = pd.DataFrame([
    {"dataset": "cifar10", "model": "resnet20", "width": 1, "sparsity": 0.97, "rewind_epoch": 50,
     "method": m, "top1_acc": v} for m, v in (("lth", 89.03), ("naive", 85.3), ("permuted", 86.43))
])


def test_table_has_mean_std_train_acc_n_gap_and_paper_columns(tmp_path):
    df = collect_runs(_write_runs(tmp_path))
    assert len(df) == 6 and list(df.columns) == SUMMARY_COLUMNS + ["label"]
    assert set(df.device) == {"cpu"} and set(df.cpu_capability) == {"AVX2"} and set(df.kept_weights) == {8100}
    table = markdown_table(df, PAPER)
    assert "mean ± std over 2 seed pairs; in brackets the final training accuracy" in table
    (got,) = _cells(table)
    assert got["n"] == "2"
    assert got["lth"] == "91.00 ± 1.41 (99.5)"  # std: sample std of (90, 92)
    assert got["naive"] == "82.00 ± 2.83 (91.0)"
    assert got["permuted (activation)"] == "87.00 ± 1.41 (97.5)"
    assert got["permuted (activation) − naive"] == "+5.00"
    # the paper's number, and ours minus it
    assert got["paper permuted"] == "86.43 (+0.57)" and got["paper naive"] == "85.30 (-3.30)"
    assert got["paper lth"] == "89.03 (+1.97)"
    assert "paper columns: the published value (ours − paper)" in table
    assert got["sparsity"] == "97%" and got["k"] == "50"


def test_one_seed_pair_says_n_1_and_shows_no_spread(tmp_path):
    df = collect_runs(_write(tmp_path, [_run("lth", 0, 90.0), _run("naive", 0, 80.0, 85.0)]))
    table = markdown_table(df)
    assert "one seed pair (n = 1): no spread" in table and "±" not in table
    (got,) = _cells(table)
    assert got["n"] == "1" and got["lth"] == "90.00 (99.0)" and got["naive"] == "80.00 (85.0)"


def test_cells_with_fewer_replicates_show_their_own_n(tmp_path):
    runs = [_run("lth", 0, 90.0), _run("lth", 1, 92.0), _run("lth", 0, 70.0, sparsity=0.9)]
    table = markdown_table(collect_runs(_write(tmp_path, runs)))
    assert "mean ± std over 1–2 seed pairs" in table
    assert [(c["sparsity"], c["n"], c["lth"]) for c in _cells(table)] == [
        ("90%", "1", "70.00 (99.0)"), ("97%", "2", "91.00 ± 1.41 (99.0)")]


def test_missing_metrics_are_reported(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dataset": "digits"}))
    with pytest.raises(ReportError, match="bad.json: metrics lack"):
        collect_runs([bad])


@pytest.mark.parametrize("key", ["test_loss", "test_acc", "train_loss"])
def test_non_finite_metrics_never_reach_a_table(tmp_path, key):
    path = tmp_path / "diverged" / "metrics.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_run("naive", 0, 80.0) | {key: math.nan}))  # json writes NaN
    with pytest.raises(ReportError, match=rf"diverged/metrics.json: non-finite metrics {key} = nan"):
        collect_runs([path])


def test_gains_and_share_of_the_gap_by_hand(tmp_path):
    df = collect_runs(_write_runs(tmp_path))
    (row,) = gains(df).to_dict("records")
    # per pair: permuted − naive = 8 and 2; lth − naive = 10 and 8
    assert row["gain"] == pytest.approx(5.0) and row["gain_std"] == pytest.approx(math.sqrt(18))
    assert row["lth_gap"] == pytest.approx(9.0) and row["share_closed"] == pytest.approx(5 / 9)
    assert row["n"] == 2 and row["label"] == "permuted (activation)"


def test_claims_hold_and_fail_on_hand_made_grids(tmp_path):
    def grid(gain_by_sparsity):
        runs = []
        for sp, g in gain_by_sparsity.items():
            for s in (0, 1):
                runs += [_run("lth", s, 95.0, sparsity=sp), _run("naive", s, 85.0, sparsity=sp),
                         _run("permuted", s, 85.0 + g, sparsity=sp)]
        return collect_runs(_write(tmp_path, runs))

    claims = check_claims(grid({0.8: -1.0, 0.9: 0.5, 0.97: 3.0}))
    assert [holds for _, holds, _ in claims] == [True, True]  # 80% is below the claim's range
    claims = check_claims(grid({0.9: 2.0, 0.97: -0.5}))
    assert [holds for _, holds, _ in claims] == [False, False]
    assert "97% k=50 permuted (activation): -0.50" in claims[0][2]


def test_environment_table_counts_runs_per_environment(tmp_path):
    runs = [_run("lth", 0, 90.0), _run("naive", 0, 80.0, environment=ENV | {"cpu_capability": "AVX512"})]
    env = environment_table(collect_runs(_write(tmp_path, runs)))
    assert sorted(zip(env.cpu_capability, env.runs)) == [("AVX2", 1), ("AVX512", 1)]


def _lmc(seed_a, mid):
    def line(name, method, middle):
        pts = [{"alpha": a, "test_loss": 0.3 + middle * (1 - abs(2 * a - 1)),
                "test_error": 5 + 10 * middle * a * (1 - a)} for a in (0.0, 0.5, 1.0)]
        return {"line": name, "match_method": method, "points": pts, "barrier_loss": middle, "barrier_error": 0.0}
    return {"dataset": "digits", "model": "mlp", "width": 1.0, "seed_a": seed_a, "seed_b": seed_a + 100,
            "lines": [line("A <-> B", "", mid), line("pi(A) <-> B (weight)", "weight", mid / 10)]}


def _overlap(seed_a):
    rows = [{"sparsity": sp, "method": m, "layer": layer, "jaccard": j, "density": 1 - sp,
             "chance": (1 - sp) / (1 + sp)}
            for sp in (0.9, 0.98) for m, j in (("weight", 0.2), ("random", 0.05))
            for layer in ("layers.0.weight", "overall")]
    return {"dataset": "digits", "model": "mlp", "width": 1.0, "seed_a": seed_a, "rows": rows}


def test_diagnostics_tables(tmp_path):
    barriers = barrier_table([_lmc(0, 1.0), _lmc(1, 2.0)])
    assert list(barriers.barrier_loss) == [1.0, 0.1, 2.0, 0.2]
    overlap = overlap_table([_overlap(0), _overlap(1)])
    diversity = pd.DataFrame([{"scope": "seed pairs", "width": 1.0, "sparsity": 0.9, "rewind_epoch": 0,
                               "runs": "naive", "pairs": 2, "members": 2, "member_acc": 90.0, "ensemble_acc": 91.5,
                               "disagreement": 4.0, "kl": 0.1, "js": 0.02}])
    md = diagnostics_markdown(barriers, overlap, diversity)
    assert "| 1 | A <-> B | 2 | 1.500 ± 0.707 | 0.00 ± 0.00 |" in md
    assert "| 1 | 90% | 0.100 | 0.053 | 0.050 ± 0.000 | 0.200 ± 0.000 |" in md
    assert "| seed pairs | 1 | 90% | 0 | naive | 2 | 90.00 | 91.50 | 4.00 | 0.1000 | 0.0200 |" in md
    assert diagnostics_markdown(None, None, None).startswith("No diagnostics")


def test_every_plot_is_written(tmp_path):
    runs = [_run(v, s, 80.0 + s + (5 if v != "naive" else 0), sparsity=sp, k=k)
            for v in ("lth", "naive", "permuted") for s in (0, 1) for sp in (0.9, 0.97) for k in (0, 50)]
    df = collect_runs(_write(tmp_path, runs))
    outs = [tmp_path / "plots" / f"{n}.png" for n in ("sparsity", "k", "gain", "lmc", "overlap")]
    plot_accuracy(df, outs[0])
    plot_accuracy_vs_k(df, outs[1], PAPER)
    plot_gain(df, outs[2])
    plot_lmc([_lmc(0, 1.0), _lmc(1, 2.0)], outs[3])
    plot_mask_overlap(overlap_table([_overlap(0)]), outs[4])
    for out in outs:
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_table_goes_between_its_markers_and_nowhere_else():
    doc = ("intro\n<!-- TABLE:a:BEGIN -->\nold\n<!-- TABLE:a:END -->\n"
           "middle\n<!-- TABLE:b:BEGIN -->\nb\n<!-- TABLE:b:END -->\n")
    out = insert_table(doc, "a", "| new |\n")
    assert out == doc.replace("old", "| new |")
    assert insert_table(out, "a", "| new |\n") == out  # idempotent
    with pytest.raises(ValueError, match="TABLE:c:BEGIN"):
        insert_table(doc, "c", "x")
