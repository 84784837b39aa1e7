"""Runs -> summary table -> markdown table and plots. Everything a user reads is made here.

``summary.csv`` has one row per sparse-training run; ``table.md`` has mean ± std over
replicates (seed pairs) per (width, sparsity, rewind epoch) and variant, plus the gap that the
paper is about: permuted minus naive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

SUMMARY_COLUMNS = [
    "dataset", "model", "width", "seed_a", "seed_b", "sparsity", "rewind_epoch", "variant", "match_method",
    "test_acc", "test_loss", "train_acc", "actual_sparsity", "epochs",
]
GROUP = ["dataset", "model", "width", "sparsity", "rewind_epoch"]
VARIANT_ORDER = ["lth", "naive", "permuted", "random"]


def collect_runs(metrics_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per sparse-training run, from the runs' metrics.json files."""
    rows = []
    for path in metrics_files:
        with open(path) as f:
            m = json.load(f)
        missing = [c for c in SUMMARY_COLUMNS if c not in m]
        if missing:
            raise ValueError(f"{path}: metrics lack {missing}")
        rows.append({c: m[c] for c in SUMMARY_COLUMNS})
    if not rows:
        raise ValueError("no sparse-training runs to summarize")
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    df["label"] = run_labels(df)
    return df.sort_values(GROUP + ["label", "seed_a"]).reset_index(drop=True)


def run_labels(df: pd.DataFrame) -> pd.Series:
    """``permuted (weight)`` for permuted runs, the variant name otherwise."""
    return df.apply(lambda r: f"{r.variant} ({r.match_method})" if r.match_method else r.variant, axis=1)


def label_order(labels: Iterable[str]) -> list[str]:
    key = {v: i for i, v in enumerate(VARIANT_ORDER)}
    return sorted(set(labels), key=lambda s: (key.get(s.split(" ")[0], len(key)), s))


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count of test accuracy per group and label."""
    agg = df.groupby(GROUP + ["label"])["test_acc"].agg(["mean", "std", "count"]).reset_index()
    agg["std"] = agg["std"].fillna(0.0)
    return agg


def load_paper(path: str | Path) -> pd.DataFrame:
    """The paper's published top-1 accuracies (dataset, model, width, sparsity, rewind_epoch, method)."""
    paper = pd.read_csv(path)
    return paper[paper.method.isin(["lth", "naive", "permuted"])].dropna(subset=["rewind_epoch"])


def markdown_table(df: pd.DataFrame, paper: pd.DataFrame | None = None) -> str:
    """Mean ± std (over seed pairs) of top-1 test accuracy, one row per setting, one column per variant.

    With ``paper`` (see :func:`load_paper`), settings the paper reports get its lth / naive /
    permuted numbers alongside (the paper's permuted uses activation matching).
    """
    agg = aggregate(df)
    labels = label_order(agg["label"])
    permuted = [lab for lab in labels if lab.startswith("permuted")]
    published = {}
    if paper is not None:
        for r in paper.itertuples():
            key = _norm((r.dataset, r.model, r.width, r.sparsity, r.rewind_epoch))
            published[(*key, r.method)] = r.top1_acc
    keys = list(agg.groupby(GROUP, sort=True).groups)
    paper_cols = [m for m in ("lth", "naive", "permuted") if any((*_norm(k), m) in published for k in keys)]
    header = ["width", "sparsity", "k"] + labels
    header += [f"{p} − naive" for p in permuted if "naive" in labels]
    header += [f"paper {m}" for m in paper_cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, g in agg.groupby(GROUP, sort=True):
        cells = {r.label: r for r in g.itertuples()}
        _, _, width, sp, k = key
        row = [f"{width:g}", f"{100 * sp:g}%", str(k)]
        row += [f"{cells[lab].mean:.2f} ± {cells[lab].std:.2f}" if lab in cells else "" for lab in labels]
        if "naive" in cells:
            row += [_signed(cells[p].mean - cells["naive"].mean) if p in cells else "" for p in permuted]
        row += [f"{published[(*_norm(key), m)]:.2f}" if (*_norm(key), m) in published else "" for m in paper_cols]
        lines.append("| " + " | ".join(row) + " |")
    n = int(agg["count"].max())
    first = df.iloc[0]
    title = (
        f"Top-1 test accuracy (%) of sparse training, {first.dataset} / {first.model}: "
        f"mean ± std over {n} seed pairs"
    )
    return f"{title}\n\n" + "\n".join(lines) + "\n"


def _signed(x: float) -> str:
    """``+1.23``; a difference that rounds to zero prints as ``+0.00``, never ``-0.00``."""
    return f"{round(x, 2) + 0.0:+.2f}"


def _norm(key: tuple) -> tuple:
    dataset, model, width, sparsity, k = key
    return dataset, model, float(width), round(float(sparsity), 6), int(k)


def plot_accuracy(df: pd.DataFrame, path: str | Path) -> None:
    """Accuracy vs sparsity, one line per variant with std error bars; one panel per (width, k)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(df)
    panels = sorted(agg.groupby(["width", "rewind_epoch"]).groups)
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False, sharey=True)
    for ax, (width, k) in zip(axes.flat, panels):
        sub = agg[(agg.width == width) & (agg.rewind_epoch == k)]
        for label in label_order(sub["label"]):
            line = sub[sub.label == label].sort_values("sparsity")
            ax.errorbar(100 * line.sparsity, line["mean"], yerr=line["std"], marker="o", capsize=3, label=label)
        ax.set_title(f"width {width:g}, rewind epoch {k}")
        ax.set_xlabel("sparsity (%)")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy (%)")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    first = df.iloc[0]
    fig.suptitle(f"{first.dataset} / {first.model}: sparse training from B with A's IMP mask")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def insert_table(document: str, name: str, table: str) -> str:
    """``document`` (e.g. README.md) with ``table`` between ``<!-- TABLE:<name>:BEGIN -->`` and
    ``<!-- TABLE:<name>:END -->``; whatever stood between the markers is replaced."""
    begin, end = f"<!-- TABLE:{name}:BEGIN -->", f"<!-- TABLE:{name}:END -->"
    if document.count(begin) != 1 or document.count(end) != 1 or document.index(begin) > document.index(end):
        raise ValueError(f"the document needs exactly one {begin} followed by one {end}")
    head, rest = document.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{table.strip()}\n{end}{tail}"
