"""Runs -> summary rows -> mean ± std table (with the paper's numbers) -> plot."""

import json

import pandas as pd
import pytest

from ticketalign.report import collect_runs, insert_table, markdown_table, plot_accuracy


def _write_runs(tmp_path):
    files = []
    accs = {"lth": [90.0, 92.0], "naive": [80.0, 84.0], "permuted": [88.0, 86.0]}
    for variant, values in accs.items():
        for seed_a, acc in enumerate(values):
            path = tmp_path / f"{variant}{seed_a}.json"
            path.write_text(json.dumps({
                "dataset": "cifar10", "model": "resnet20", "width": 1.0, "seed_a": seed_a, "seed_b": 10 + seed_a,
                "sparsity": 0.97, "rewind_epoch": 50, "variant": variant,
                "match_method": "activation" if variant == "permuted" else "", "test_acc": acc, "test_loss": 0.5,
                "train_acc": 99.0, "actual_sparsity": 0.97, "epochs": 150, "history": [],
            }))
            files.append(path)
    return files


def test_table_has_mean_std_gap_and_paper_columns(tmp_path):
    df = collect_runs(_write_runs(tmp_path))
    assert len(df) == 6
    paper = pd.DataFrame([
        {"dataset": "cifar10", "model": "resnet20", "width": 1, "sparsity": 0.97, "rewind_epoch": 50,
         "method": m, "top1_acc": v} for m, v in (("lth", 89.03), ("naive", 85.3), ("permuted", 86.43))
    ])
    table = markdown_table(df, paper)
    header, _, row = table.strip().splitlines()[-3:]
    cells = [c.strip() for c in row.strip("|").split("|")]
    columns = [c.strip() for c in header.strip("|").split("|")]
    got = dict(zip(columns, cells))
    assert got["lth"] == "91.00 ± 1.41"
    assert got["naive"] == "82.00 ± 2.83"
    assert got["permuted (activation)"] == "87.00 ± 1.41"
    assert got["permuted (activation) − naive"] == "+5.00"
    assert got["paper permuted"] == "86.43" and got["paper naive"] == "85.30"
    assert got["sparsity"] == "97%" and got["k"] == "50"


def test_missing_metrics_are_reported(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dataset": "digits"}))
    with pytest.raises(ValueError, match="metrics lack"):
        collect_runs([bad])


def test_plot_is_written(tmp_path):
    df = collect_runs(_write_runs(tmp_path))
    out = tmp_path / "plots" / "acc.png"
    plot_accuracy(df, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_table_goes_between_its_markers_and_nowhere_else():
    doc = ("intro\n<!-- TABLE:a:BEGIN -->\nold\n<!-- TABLE:a:END -->\n"
           "middle\n<!-- TABLE:b:BEGIN -->\nb\n<!-- TABLE:b:END -->\n")
    out = insert_table(doc, "a", "| new |\n")
    assert out == doc.replace("old", "| new |")
    assert insert_table(out, "a", "| new |\n") == out  # idempotent
    with pytest.raises(ValueError, match="TABLE:c:BEGIN"):
        insert_table(doc, "c", "x")
