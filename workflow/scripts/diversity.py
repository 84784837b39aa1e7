#!/usr/bin/env python
"""Ensemble diversity of the sparse runs from their saved test logits (no retraining): across
seed pairs per (width, sparsity, k, run), and between runs of one seed pair (see
ticketalign.analysis.diversity_rows). Writes one CSV row per ensemble."""

import argparse
from pathlib import Path

import pandas as pd
import torch

from ticketalign.analysis import DIVERSITY_COLUMNS, diversity_rows
from ticketalign.artifacts import load_artifact


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--logits", nargs="+", required=True, help="the sparse runs' logits.pt files")
    p.add_argument("--out", type=Path, required=True, help="output CSV")
    args = p.parse_args()
    runs, labels, first = [], None, None
    for path in args.logits:
        data, meta = load_artifact(path, "test_logits")
        if labels is None:
            labels, first = data["labels"], path
        elif not torch.equal(labels, data["labels"]):
            raise SystemExit(f"{path}: its test labels differ from those of {first}; the runs were not evaluated "
                             "on one test split (delete the odd one out and rerun its train_sparse job)")
        runs.append((meta, data["logits"].float()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(diversity_rows(runs, labels), columns=list(DIVERSITY_COLUMNS)).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
