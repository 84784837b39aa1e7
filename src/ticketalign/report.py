"""Runs -> summary table -> markdown table and plots. Everything a user reads is made here.

``summary.csv`` has one row per sparse-training run; ``table.md`` has mean ± std over
replicates (seed pairs) per (width, sparsity, rewind epoch) and variant, with the training
accuracy beside the test accuracy (an under-trained run must not pass for the effect), plus the
gap that the paper is about: permuted minus naive. The plots show the paper's figures: accuracy
against the rewind epoch k and against sparsity, and the naive -> permuted gain. The diagnostics
of :mod:`ticketalign.analysis` are tabulated and drawn here too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

METRIC_COLUMNS = ["test_acc", "test_loss", "train_acc", "train_loss", "actual_sparsity", "kept_weights", "epochs",
                  "wall_s"]
ENV_COLUMNS = ["device", "torch", "cpu_capability", "threads"]  # what decides bit-identical reruns
SUMMARY_COLUMNS = [
    "dataset", "model", "width", "seed_a", "seed_b", "sparsity", "rewind_epoch", "variant", "match_method",
    *METRIC_COLUMNS, *ENV_COLUMNS,
]
GROUP = ["dataset", "model", "width", "sparsity", "rewind_epoch"]
VARIANT_ORDER = ["lth", "naive", "permuted", "random"]
ENV_COLUMNS = ["device", "torch", "cpu_capability", "threads"]


class ReportError(ValueError):
    """A run's metrics cannot go into a table; the message names the file and what to do."""


def collect_runs(metrics_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per sparse-training run, from the runs' metrics.json files.

    A metric that is missing or not a finite number (a diverged run: NaN loss, chance
    accuracy) stops here with the file's name: a wrong number never reaches a table.
    """
    rows = []
    for path in metrics_files:
        with open(path) as f:
            m = json.load(f)
        env = m.get("environment", {})
        row = {**{k: env.get(k) for k in ENV_COLUMNS}, **m}
        missing = [c for c in SUMMARY_COLUMNS if c not in row or row[c] is None]
        if missing:
            raise ReportError(f"{path}: metrics lack {missing}; it was written by older code or a broken job: "
                              f"delete it (or run snakemake with --forcerun train_sparse) to retrain the run")
        bad = [c for c in METRIC_COLUMNS if not _finite(row[c])]
        if bad:
            raise ReportError(f"{path}: non-finite metrics {', '.join(f'{c} = {row[c]!r}' for c in bad)}; the run "
                              f"diverged (lower the learning rate) and cannot go into the table")
        rows.append({c: row[c] for c in SUMMARY_COLUMNS})
    if not rows:
        raise ReportError("no sparse-training runs to summarize")
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    df["label"] = run_labels(df)
    return df.sort_values(GROUP + ["label", "seed_a"]).reset_index(drop=True)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def run_labels(df: pd.DataFrame) -> pd.Series:
    """``permuted (weight)`` for permuted runs, the variant name otherwise."""
    return df.apply(lambda r: f"{r.variant} ({r.match_method})" if r.match_method else r.variant, axis=1)


def label_order(labels: Iterable[str]) -> list[str]:
    key = {v: i for i, v in enumerate(VARIANT_ORDER)}
    return sorted(set(labels), key=lambda s: (key.get(s.split(" ")[0], len(key)), s))


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Per group and label: mean, std and count of test accuracy, and mean training accuracy.

    ``std`` is the sample standard deviation over seed pairs, NaN for a single one (there is no
    spread to measure, and 0 would read as a measured zero).
    """
    agg = df.groupby(GROUP + ["label"]).agg(
        mean=("test_acc", "mean"), std=("test_acc", "std"), count=("test_acc", "count"), train=("train_acc", "mean"),
    )
    return agg.reset_index()


def _mean_std(mean: float, std: float, count: int) -> str:
    """``91.00 ± 1.41``; a single replicate shows its value alone."""
    return f"{mean:.2f}" if count < 2 or pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def load_paper(path: str | Path) -> pd.DataFrame:
    """The paper's published top-1 accuracies (dataset, model, width, sparsity, rewind_epoch, method)."""
    paper = pd.read_csv(path)
    return paper[paper.method.isin(["lth", "naive", "permuted"])].dropna(subset=["rewind_epoch"])


def markdown_table(df: pd.DataFrame, paper: pd.DataFrame | None = None) -> str:
    """Test accuracy mean ± std (over seed pairs) with the mean training accuracy in brackets,
    one row per setting, one column per variant; ``n`` is the number of seed pairs of the row.

    With ``paper`` (see :func:`load_paper`), settings the paper reports get its lth / naive /
    permuted numbers alongside (the paper's permuted uses activation matching).
    """
    agg = aggregate(df)
    labels = label_order(agg["label"])
    permuted = [lab for lab in labels if lab.startswith("permuted")]
    published = _published(paper)
    keys = list(agg.groupby(GROUP, sort=True).groups)
    paper_cols = [m for m in ("lth", "naive", "permuted") if any((*_norm(k), m) in published for k in keys)]
    header = ["width", "sparsity", "k", "n"] + labels
    header += [f"{p} − naive" for p in permuted if "naive" in labels]
    header += [f"paper {m}" for m in paper_cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, g in agg.groupby(GROUP, sort=True):
        cells = {r.label: r for r in g.itertuples()}
        _, _, width, sp, k = key
        row = [f"{width:g}", f"{100 * sp:g}%", str(k), _count_range(g["count"])]
        row += [f"{_mean_std(c.mean, c.std, c.count)} ({c.train:.1f})" if (c := cells.get(lab)) else ""
                for lab in labels]
        if "naive" in labels:
            row += [_signed(cells[p].mean - cells["naive"].mean) if p in cells and "naive" in cells else ""
                    for p in permuted]
        row += [_paper_cell(published.get((*_norm(key), m)), cells.get(_ours(m, labels))) for m in paper_cols]
        lines.append("| " + " | ".join(row) + " |")
    n = _count_range(agg["count"])
    first = df.iloc[0]
    spread = "one seed pair (n = 1): no spread" if n == "1" else f"mean ± std over {n} seed pairs"
    title = (
        f"Top-1 test accuracy (%) of sparse training, {first.dataset} / {first.model}: {spread}; "
        f"in brackets the final training accuracy (%)"
        + ("; paper columns: the published value (ours − paper)" if paper_cols else "")
    )
    return f"{title}\n\n" + "\n".join(lines) + "\n"


def _ours(method: str, labels: Sequence[str]) -> str:
    """Our label compared with the paper's ``method``: its permuted runs use activation matching."""
    if method != "permuted":
        return method
    return "permuted (activation)" if "permuted (activation)" in labels else next(
        (lab for lab in labels if lab.startswith("permuted")), "permuted")


def _paper_cell(published: float | None, ours: Any) -> str:
    """``86.43 (+0.57)``: the paper's number and our mean minus it; blank where the paper has none."""
    if published is None:
        return ""
    return f"{published:.2f}" + (f" ({_signed(ours.mean - published)})" if ours is not None else "")


def _count_range(counts: Iterable[int]) -> str:
    """``3``, or ``2–3`` where some cells have fewer replicates than others."""
    lo, hi = int(min(counts)), int(max(counts))
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _published(paper: pd.DataFrame | None) -> dict[tuple, float]:
    """``(dataset, model, width, sparsity, k, method) -> top-1 %`` of the paper's results."""
    out = {}
    for r in (paper.itertuples() if paper is not None else ()):
        out[(*_norm((r.dataset, r.model, r.width, r.sparsity, r.rewind_epoch)), r.method)] = r.top1_acc
    return out


def _signed(x: float) -> str:
    """``+1.23``; a difference that rounds to zero prints as ``+0.00``, never ``-0.00``."""
    return f"{round(x, 2) + 0.0:+.2f}"


def _norm(key: tuple) -> tuple:
    dataset, model, width, sparsity, k = key
    return dataset, model, float(width), round(float(sparsity), 6), int(k)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(n: int, size: tuple[float, float] = (4.6, 3.6), cols: int = 3):
    plt = _pyplot()
    cols = min(n, cols)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows + 0.6), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return plt, fig, axes


def _save(plt, fig, path: str | Path, legend_ax=None, ncol: int = 4) -> None:
    """Save with the legend of ``legend_ax`` below the panels (one legend for the whole figure)."""
    bottom = 0.0
    if legend_ax is not None:
        handles, names = legend_ax.get_legend_handles_labels()
        ncol = min(len(names), ncol)
        fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
        bottom = min(0.3, 0.35 * (-(-len(names) // ncol)) / fig.get_figheight())
    fig.tight_layout(rect=(0, bottom, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: one colour per variant, so that every plot reads the same way
COLORS = {"lth": "tab:green", "naive": "tab:red", "permuted (activation)": "tab:blue",
          "permuted (weight)": "tab:purple", "random": "tab:gray"}


def _style(label: str) -> dict[str, Any]:
    return {"color": COLORS.get(label, "black"), "marker": "o", "capsize": 3, "label": label}


def _spread_note(df: pd.DataFrame) -> str:
    n = _count_range(aggregate(df)["count"])
    return "one seed pair (no error bars)" if n == "1" else f"mean ± std over {n} seed pairs"


def plot_accuracy(df: pd.DataFrame, path: str | Path) -> None:
    """Accuracy vs sparsity, one line per variant with std error bars; one panel per (width, k)."""
    agg = aggregate(df)
    panels = sorted(agg.groupby(["width", "rewind_epoch"]).groups)
    plt, fig, axes = _panels(len(panels))
    for ax, (width, k) in zip(axes.flat, panels):
        sub = agg[(agg.width == width) & (agg.rewind_epoch == k)]
        labels = label_order(sub["label"])
        for i, label in enumerate(labels):
            line = sub[sub.label == label].sort_values("sparsity")
            x = 100 * line.sparsity + 0.25 * (i - (len(labels) - 1) / 2)  # side by side: error bars stay visible
            ax.errorbar(x, line["mean"], yerr=line["std"].fillna(0), **_style(label))
        ax.set_xticks(sorted(100 * sub.sparsity.unique()))
        ax.set_title(f"width {width:g}, sparse training from epoch k = {k}", fontsize=10)
        ax.set_xlabel("sparsity (% of prunable weights removed)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    first = df.iloc[0]
    fig.suptitle(f"{first.dataset} / {first.model}: test accuracy after sparse training vs sparsity "
                 f"({_spread_note(df)})", fontsize=11)
    _save(plt, fig, path, axes.flat[0])


def plot_accuracy_vs_k(df: pd.DataFrame, path: str | Path, paper: pd.DataFrame | None = None) -> None:
    """The paper's main figure: accuracy vs rewind epoch k, one panel per (width, sparsity), one
    line per variant and matching method; the paper's numbers as crosses where it has the cell."""
    agg = aggregate(df)
    published = _published(paper)
    panels = sorted(agg.groupby(["width", "sparsity"]).groups)
    plt, fig, axes = _panels(len(panels))
    first = df.iloc[0]
    drawn_paper = False
    for ax, (width, sp) in zip(axes.flat, panels):
        sub = agg[(agg.width == width) & (agg.sparsity == sp)]
        labels = label_order(sub["label"])
        ks = sorted(set(sub.rewind_epoch))
        dodge = 0.06 * (max(ks) - min(ks) or 1)  # side by side, so that error bars do not hide each other
        for i, label in enumerate(labels):
            line = sub[sub.label == label].sort_values("rewind_epoch")
            x = line.rewind_epoch + dodge * (i - (len(labels) - 1) / 2)
            ax.errorbar(x, line["mean"], yerr=line["std"].fillna(0), **_style(label))
        for method, color in (("lth", "tab:green"), ("naive", "tab:red"), ("permuted", "tab:blue")):
            pts = [(k, published[key]) for k in sorted(set(sub.rewind_epoch))
                   if (key := (*_norm((first.dataset, first.model, width, sp, k)), method)) in published]
            if pts:
                drawn_paper = True
                ax.scatter(*zip(*pts), marker="x", s=60, color=color, label=f"paper: {method}", zorder=5)
        ax.set_xticks(ks)
        ax.set_title(f"width {width:g}, sparsity {100 * sp:g}%", fontsize=10)
        ax.set_xlabel("rewind epoch k")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    note = "; crosses: the paper's numbers" if drawn_paper else "; the paper reports none of these cells"
    fig.suptitle(f"{first.dataset} / {first.model}: test accuracy after sparse training from the dense models at "
                 f"epoch k\n({_spread_note(df)}{note})", fontsize=11)
    legend_ax = max(axes.flat[:len(panels)], key=lambda a: len(a.get_legend_handles_labels()[1]))
    _save(plt, fig, path, legend_ax)


def gains(df: pd.DataFrame) -> pd.DataFrame:
    """Per (width, sparsity, k, permuted label): the gain permuted − naive (mean and std of the
    per-seed-pair differences: the runs of one pair share their data order) and the share of the
    lth − naive gap it closes (from the means; undefined, NaN, when that gap is under 0.5 points)."""
    rows = []
    keys = ["width", "sparsity", "rewind_epoch", "seed_a"]
    wide = df.pivot_table(index=keys, columns="label", values="test_acc").reset_index()
    for label in [c for c in wide.columns if isinstance(c, str) and c.startswith("permuted")]:
        if "naive" not in wide:
            break
        wide["gain"] = wide[label] - wide["naive"]
        wide["gap"] = wide["lth"] - wide["naive"] if "lth" in wide else float("nan")
        for (width, sp, k), g in wide.groupby(["width", "sparsity", "rewind_epoch"]):
            gap = g["gap"].mean()
            rows.append({"width": width, "sparsity": sp, "rewind_epoch": k, "label": label,
                         "gain": g["gain"].mean(), "gain_std": g["gain"].std(), "n": len(g), "lth_gap": gap,
                         "share_closed": g["gain"].mean() / gap if gap >= 0.5 else float("nan")})
    return pd.DataFrame(rows, columns=["width", "sparsity", "rewind_epoch", "label", "gain", "gain_std", "n",
                                       "lth_gap", "share_closed"])


def plot_gain(df: pd.DataFrame, path: str | Path) -> None:
    """The naive -> permuted gain and the share of the lth − naive gap it closes, against
    sparsity, one line per (matching method, width, k)."""
    table = gains(df)
    plt, fig, axes = _panels(2, size=(5.6, 4.0))
    widths = sorted(set(table.width))
    ks = sorted(set(table.rewind_epoch))
    styles = ["-", "--", ":", "-."]
    for (label, width, k), line in table.groupby(["label", "width", "rewind_epoch"]):
        line = line.sort_values("sparsity")
        method = label.replace("permuted (", "").rstrip(")")
        name = f"{method} matching" + (f", width {width:g}" if len(widths) > 1 else "") + f", k = {k}"
        style = {"color": COLORS.get(label, "black"), "linestyle": styles[ks.index(k) % len(styles)],
                 "marker": "os^Dv"[widths.index(width) % 5], "label": name}
        axes[0, 0].errorbar(100 * line.sparsity, line.gain, yerr=line.gain_std.fillna(0), capsize=3, **style)
        axes[0, 1].plot(100 * line.sparsity, 100 * line.share_closed, **style)
    axes[0, 0].axhline(0, color="black", lw=0.8)
    axes[0, 0].set_title("gain: permuted − naive (points)", fontsize=10)
    axes[0, 0].set_ylabel("test accuracy difference (points)")
    axes[0, 1].axhline(100, color="tab:green", lw=0.8, ls="--")
    axes[0, 1].axhline(0, color="black", lw=0.8)
    axes[0, 1].set_title("share of the lth − naive gap closed (%)\n(100 = permuted reaches lth; "
                         "omitted where lth − naive < 0.5)", fontsize=10)
    axes[0, 1].set_ylabel("% of the gap closed")
    ticks = sorted(100 * table.sparsity.unique())
    for ax in axes.flat:
        ax.set_xlabel("sparsity (%)")
        ax.set_xticks(ticks)
        ax.set_xlim(ticks[0] - 1, ticks[-1] + 1)
        ax.grid(alpha=0.3)
    first = df.iloc[0]
    fig.suptitle(f"{first.dataset} / {first.model}: what aligning the mask buys (line style: rewind epoch k; "
                 f"error bars: std of per-pair gains)", fontsize=10)
    _save(plt, fig, path, axes[0, 0])


def check_claims(df: pd.DataFrame, min_sparsity: float = 0.9) -> list[tuple[str, bool, str]]:
    """The paper's qualitative claims checked on a summary: ``(claim, holds, evidence)`` each.

    1. permuted >= naive (mean over seed pairs) at every sparsity >= ``min_sparsity``, for every
       k, width and matching method;
    2. the gain permuted − naive grows with sparsity: for every (width, k, method), the gain at
       the sparsest setting exceeds the gain at the least sparse one (a trend over the grid, not
       a strict increase between every neighbouring pair, which seed noise can break).
    """
    table = gains(df)
    out = []
    high = table[table.sparsity >= min_sparsity - 1e-9]
    worse = high[high.gain < 0]
    out.append((f"permuted >= naive at every sparsity >= {100 * min_sparsity:g}% and every k",
                worse.empty and not high.empty,
                "; ".join(f"w{r.width:g} {100 * r.sparsity:g}% k={r.rewind_epoch} {r.label}: {r.gain:+.2f}"
                          for r in (worse if not worse.empty else high).itertuples())))
    trends = []
    for (label, width, k), g in table.groupby(["label", "width", "rewind_epoch"]):
        g = g.sort_values("sparsity")
        if len(g) >= 2:
            lo, hi = g.iloc[0], g.iloc[-1]
            trends.append((hi.gain > lo.gain, f"w{width:g} k={k} {label}: {lo.gain:+.2f} at {100 * lo.sparsity:g}% "
                                              f"-> {hi.gain:+.2f} at {100 * hi.sparsity:g}%"))
    out.append(("the gain grows with sparsity", bool(trends) and all(t for t, _ in trends),
                "; ".join(text for _, text in trends)))
    return out


# ---------------------------------------------------------------------------------------------
# Diagnostics (computed by ticketalign.analysis in their own rules)
# ---------------------------------------------------------------------------------------------


def barrier_table(lmc: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (width, seed pair, line) from the lmc rule's JSON files: the loss and error
    barriers, and the loss at the ends (A or pi(A) at alpha 0, B at alpha 1)."""
    rows = []
    for result in lmc:
        for line in result["lines"]:
            rows.append({"width": float(result["width"]), "seed_a": result["seed_a"], "seed_b": result["seed_b"],
                         "line": line["line"], "barrier_loss": line["barrier_loss"],
                         "barrier_error": line["barrier_error"], "loss_at_0": line["points"][0]["test_loss"],
                         "loss_at_1": line["points"][-1]["test_loss"]})
    return pd.DataFrame(rows)


def overlap_table(overlaps: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (width, seed pair, sparsity, method, layer) from the mask_overlap rule's JSON files."""
    return pd.DataFrame([{"width": float(o["width"]), "seed_a": o["seed_a"], **r} for o in overlaps for r in o["rows"]])


def diagnostics_markdown(barriers: pd.DataFrame | None, overlap: pd.DataFrame | None,
                         diversity: pd.DataFrame | None) -> str:
    """The diagnostics as markdown tables (mean ± std over seed pairs), each with a line on how to read it."""
    parts = []
    if barriers is not None and not barriers.empty:
        g = barriers.groupby(["width", "line"], sort=False)
        lines = ["| width | line | n | loss barrier | error barrier (points) |", "|---|---|---|---|---|"]
        for (width, line), r in g:
            n = len(r)
            lines.append(f"| {width:g} | {line} | {n} | {_ms(r.barrier_loss, 3)} | {_ms(r.barrier_error, 2)} |")
        parts.append("### Linear mode connectivity\n\nThe largest rise of test loss (and error) above the straight "
                     "line between the ends; ~0 means the two models share one basin. A high A <-> B barrier that "
                     "falls for pi(A) <-> B says the permutation moves A into B's basin.\n\n" + "\n".join(lines))
    if overlap is not None and not overlap.empty:
        o = overlap[overlap.layer == "overall"]
        methods = sorted(set(o.method))
        lines = ["| width | sparsity | mask density | chance (independent masks) | " + " | ".join(methods) + " |",
                 "|" + "---|" * (4 + len(methods))]
        for (width, sp), r in o.groupby(["width", "sparsity"]):
            cells = [_ms(r[r.method == m].jaccard, 3) for m in sorted(set(o.method))]
            lines.append(f"| {width:g} | {100 * sp:g}% | {r.density.mean():.3f} | {r.chance.mean():.3f} | "
                         + " | ".join(cells) + " |")
        parts.append("### Mask overlap\n\nJaccard similarity of A's mask m_A with pi(m_A) (all layers together); "
                     "`random` is m_A under a random permutation, which should sit at the chance level. "
                     "Low overlap means the permuted mask really is a different mask on B.\n\n" + "\n".join(lines))
    if diversity is not None and not diversity.empty:
        lines = ["| scope | width | sparsity | k | runs | n | member acc | ensemble acc | disagreement (%) | KL | JS |",
                 "|" + "---|" * 11]
        for r in diversity.sort_values(["scope", "width", "sparsity", "rewind_epoch", "runs"]).itertuples():
            lines.append(f"| {r.scope} | {r.width:g} | {100 * r.sparsity:g}% | {r.rewind_epoch} | {r.runs} | "
                         f"{r.pairs} | {r.member_acc:.2f} | {r.ensemble_acc:.2f} | {r.disagreement:.2f} | "
                         f"{r.kl:.4f} | {r.js:.4f} |")
        parts.append("### Ensemble diversity\n\n`seed pairs`: the runs of one variant across seed pairs as one "
                     "ensemble; `variants`: two runs of one seed pair, averaged over pairs. Similar diversity for "
                     "permuted and naive means aligning the mask does not collapse B onto A's solution; an "
                     "ensemble gain over the members says the solutions err differently.\n\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n" if parts else "No diagnostics were enabled (config: diagnostics).\n"


def _ms(values: pd.Series, digits: int) -> str:
    mean = f"{values.mean():.{digits}f}"
    return mean if len(values) < 2 else f"{mean} ± {values.std():.{digits}f}"


def plot_lmc(lmc: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """Test loss and error along the lines A <-> B and pi(A) <-> B, mean over seed pairs; one
    column per width."""
    rows = [{"width": float(r["width"]), "line": line["line"], **pt} for r in lmc for line in r["lines"]
            for pt in line["points"]]
    df = pd.DataFrame(rows)
    widths = sorted(set(df.width))
    plt, fig, axes = _panels(2 * len(widths), cols=2)
    colors = {"A <-> B": "tab:red", "pi(A) <-> B (activation)": "tab:blue", "pi(A) <-> B (weight)": "tab:purple"}
    n = len({(r["seed_a"], r["seed_b"]) for r in lmc})
    for i, width in enumerate(widths):
        for j, (metric, name) in enumerate((("test_loss", "test loss"), ("test_error", "test error (%)"))):
            ax = axes.flat[2 * i + j]
            sub = df[df.width == width]
            for line, g in sub.groupby("line", sort=False):
                m = g.groupby("alpha")[metric].agg(["mean", "std"]).reset_index()
                ax.errorbar(m.alpha, m["mean"], yerr=m["std"].fillna(0), marker="o", ms=3, capsize=2,
                            color=colors.get(line, "black"), label=line.replace("pi", "π").replace("<->", "↔"))
            ax.set_xlabel("α: model (1 − α)·start + α·B (start = A or π(A))")
            ax.set_ylabel(name)
            ax.set_title(f"width {width:g}: {name} on the linear path", fontsize=10)
            ax.grid(alpha=0.3)
    first = lmc[0]
    fig.suptitle(f"{first['dataset']} / {first['model']}: linear mode connectivity of the dense models "
                 f"(mean ± std over {n} seed pair{'s' if n > 1 else ''}); a bump in the middle is a barrier",
                 fontsize=10)
    _save(plt, fig, path, axes.flat[0])


def plot_mask_overlap(overlap: pd.DataFrame, path: str | Path) -> None:
    """Overall Jaccard of m_A with pi(m_A) per matching method, and with a random permutation,
    against sparsity, beside the chance level d / (2 - d)."""
    o = overlap[overlap.layer == "overall"]
    widths = sorted(set(o.width))
    plt, fig, axes = _panels(len(widths), size=(7.5, 4.2))
    colors = {"activation": "tab:blue", "weight": "tab:purple", "random": "tab:gray"}
    for ax, width in zip(axes.flat, widths):
        sub = o[o.width == width]
        for method, g in sub.groupby("method"):
            m = g.groupby("sparsity").jaccard.agg(["mean", "std"]).reset_index()
            name = "random permutation" if method == "random" else f"π from {method} matching"
            ax.errorbar(100 * m.sparsity, m["mean"], yerr=m["std"].fillna(0), marker="o", capsize=3,
                        color=colors.get(method, "black"), label=name)
        c = sub.groupby("sparsity").chance.mean()
        ax.plot(100 * c.index, c.values, "k--", lw=1, label="chance: independent masks of equal layer densities")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("Jaccard(m_A, permuted m_A)")
        ax.set_ylim(0, min(1.02, 1.3 * sub.jaccard.max() + 0.02))
        ax.set_xticks(sorted(100 * sub.sparsity.unique()))
        ax.set_title(f"width {width:g}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle("Overlap of A's mask with its permuted version (Jaccard; 1 = the same mask, 0 = disjoint)",
                 fontsize=10)
    _save(plt, fig, path, axes.flat[0], ncol=2)


def environment_table(df: pd.DataFrame) -> pd.DataFrame:
    """The distinct environments the runs computed in (what decides bit-identical reproduction), with run counts."""
    return df.groupby(ENV_COLUMNS, dropna=False).size().reset_index(name="runs")


def insert_table(document: str, name: str, table: str) -> str:
    """``document`` (e.g. README.md) with ``table`` between ``<!-- TABLE:<name>:BEGIN -->`` and
    ``<!-- TABLE:<name>:END -->``; whatever stood between the markers is replaced."""
    begin, end = f"<!-- TABLE:{name}:BEGIN -->", f"<!-- TABLE:{name}:END -->"
    if document.count(begin) != 1 or document.count(end) != 1 or document.index(begin) > document.index(end):
        raise ValueError(f"the document needs exactly one {begin} followed by one {end}")
    head, rest = document.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{table.strip()}\n{end}{tail}"
