#!/usr/bin/env python
"""Plot test accuracy against sparsity, one line per variant, from summary.csv."""

import argparse
from pathlib import Path

import pandas as pd

from ticketalign.report import plot_accuracy, run_labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--summary", required=True, help="summary.csv from summarize")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    args = p.parse_args()
    df = pd.read_csv(args.summary, keep_default_na=False)
    df["label"] = run_labels(df)
    plot_accuracy(df, args.out)


if __name__ == "__main__":
    main()
