#!/usr/bin/env python
"""Collect every sparse-training run into summary.csv, a mean ± std markdown table (test and
training accuracy, the paper's numbers beside ours), the naive -> permuted gains and the
environments the runs computed in."""

import argparse
from pathlib import Path

from ticketalign.report import (
    SUMMARY_COLUMNS,
    ReportError,
    collect_runs,
    environment_table,
    gains,
    load_paper,
    markdown_table,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--metrics", nargs="+", required=True, help="the runs' metrics.json files")
    p.add_argument("--summary", type=Path, required=True, help="output CSV, one row per run")
    p.add_argument("--table", type=Path, required=True, help="output markdown table")
    p.add_argument("--gains", type=Path, required=True, help="output CSV: permuted − naive per setting")
    p.add_argument("--environment", type=Path, required=True, help="output CSV: the runs' software and hardware")
    p.add_argument("--paper", default=None, help="the paper's results CSV, for side-by-side columns")
    args = p.parse_args()
    try:
        df = collect_runs(args.metrics)
    except ReportError as err:
        raise SystemExit(str(err)) from None
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    df[SUMMARY_COLUMNS].to_csv(args.summary, index=False)
    gains(df).to_csv(args.gains, index=False)
    environment_table(df).to_csv(args.environment, index=False)
    args.table.write_text(markdown_table(df, load_paper(args.paper) if args.paper else None))
    print(args.table.read_text())


if __name__ == "__main__":
    main()
