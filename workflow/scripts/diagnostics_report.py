#!/usr/bin/env python
"""Tabulate and draw the diagnostics: barrier heights and the linear paths (lmc), mask overlap,
ensemble diversity; writes diagnostics.md and CSVs/PNGs for whichever are given."""

import argparse
import json
from pathlib import Path

import pandas as pd

from ticketalign.report import barrier_table, diagnostics_markdown, overlap_table, plot_lmc, plot_mask_overlap


def _read(paths: list[str]) -> list[dict]:
    out = []
    for path in paths:
        with open(path) as f:
            out.append(json.load(f))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lmc", nargs="*", default=[], help="lmc.json files (one per seed pair and width)")
    p.add_argument("--overlap", nargs="*", default=[], help="mask_overlap.json files")
    p.add_argument("--diversity", default=None, help="diversity.csv")
    p.add_argument("--out-dir", type=Path, required=True,
                   help="writes diagnostics.md, barriers.csv, lmc.png, mask_overlap.csv, mask_overlap.png")
    args = p.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    barriers = overlap = diversity = None
    if args.lmc:
        lmc = _read(args.lmc)
        barriers = barrier_table(lmc)
        barriers.to_csv(args.out_dir / "barriers.csv", index=False)
        plot_lmc(lmc, args.out_dir / "lmc.png")
    if args.overlap:
        overlap = overlap_table(_read(args.overlap))
        overlap.to_csv(args.out_dir / "mask_overlap.csv", index=False)
        plot_mask_overlap(overlap, args.out_dir / "mask_overlap.png")
    if args.diversity:
        diversity = pd.read_csv(args.diversity)
    (args.out_dir / "diagnostics.md").write_text(diagnostics_markdown(barriers, overlap, diversity))
    print((args.out_dir / "diagnostics.md").read_text())


if __name__ == "__main__":
    main()
