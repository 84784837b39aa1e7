#!/usr/bin/env python
"""The paper's figures from summary.csv: accuracy vs rewind epoch k (the paper's numbers
overlaid), accuracy vs sparsity, and the naive -> permuted gain."""

import argparse
from pathlib import Path

import pandas as pd

from ticketalign.report import load_paper, plot_accuracy, plot_accuracy_vs_k, plot_gain, run_labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--summary", required=True, help="summary.csv from summarize")
    p.add_argument("--paper", default=None, help="the paper's results CSV, overlaid where it has the cell")
    p.add_argument("--vs-sparsity", type=Path, required=True, help="output PNG: accuracy vs sparsity")
    p.add_argument("--vs-k", type=Path, required=True, help="output PNG: accuracy vs rewind epoch k")
    p.add_argument("--gain", type=Path, required=True, help="output PNG: permuted − naive and share of the gap")
    args = p.parse_args()
    df = pd.read_csv(args.summary, keep_default_na=False)
    df["label"] = run_labels(df)
    plot_accuracy(df, args.vs_sparsity)
    plot_accuracy_vs_k(df, args.vs_k, load_paper(args.paper) if args.paper else None)
    plot_gain(df, args.gain)


if __name__ == "__main__":
    main()
