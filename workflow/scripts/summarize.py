#!/usr/bin/env python
"""Collect every sparse-training run into summary.csv and a mean ± std markdown table."""

import argparse
from pathlib import Path

from ticketalign.report import SUMMARY_COLUMNS, collect_runs, load_paper, markdown_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--metrics", nargs="+", required=True, help="the runs' metrics.json files")
    p.add_argument("--summary", type=Path, required=True, help="output CSV, one row per run")
    p.add_argument("--table", type=Path, required=True, help="output markdown table")
    p.add_argument("--paper", default=None, help="the paper's results CSV, for side-by-side columns")
    args = p.parse_args()
    df = collect_runs(args.metrics)
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    df[SUMMARY_COLUMNS].to_csv(args.summary, index=False)
    args.table.write_text(markdown_table(df, load_paper(args.paper) if args.paper else None))
    print(args.table.read_text())


if __name__ == "__main__":
    main()
