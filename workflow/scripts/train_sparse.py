#!/usr/bin/env python
"""Sparse training from rewind epoch k for one (seed pair, sparsity, k): every run of the experiment.

The runs (lth, naive, permuted per matching method, random) and what each starts from are
defined in ticketalign.experiment. Each run trains (epochs - k) epochs and writes
<out-dir>/<run>/metrics.json (with its wall time and the environment that decides
reproducibility) and <out-dir>/<run>/logits.pt (its test logits, float16, for the ensemble
diversity diagnostics: no retraining needed).
"""

import argparse
import time
from pathlib import Path

import torch

from ticketalign import cli
from ticketalign.artifacts import save_artifact, save_json
from ticketalign.config import VARIANTS
from ticketalign.experiment import sparse_runs
from ticketalign.masks import kept_count, sparsity
from ticketalign.predictions import test_logits
from ticketalign.provenance import environment
from ticketalign.train import train


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _number_or_text(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--seed", type=int, required=True, help="seed of the data order (shared by all runs)")
    p.add_argument("--seeds", type=int, nargs=2, required=True, metavar=("A", "B"),
                   help="seeds of A and B (checked against the files)")
    p.add_argument("--sparsity", type=float, required=True, help="target sparsity of the masks")
    p.add_argument("--rewind-epoch", type=int, required=True, help="k: runs train epochs - k epochs")
    p.add_argument("--a-rewind", required=True, help="dense A at rewind epoch k")
    p.add_argument("--b-rewind", required=True, help="dense B at rewind epoch k")
    p.add_argument("--mask", required=True, help="A's IMP mask")
    p.add_argument("--permuted-mask", type=_key_value, action="append", default=[], metavar="METHOD=PATH",
                   help="A's mask permuted by the METHOD matching (repeatable)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, required=True)
    p.add_argument("--tag", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="copied into every metrics.json (width, seeds, sparsity, ...)")
    p.add_argument("--save-logits", choices=["true", "false"], default="true",
                   help="write <run>/logits.pt, the test logits the diversity diagnostic reads (default: true)")
    p.add_argument("--out-dir", type=Path, required=True)
    args = p.parse_args()

    rt, device = cli.runtime(args)
    data = cli.dataset(args, device)
    meta = cli.model_meta(args)
    (seed_a, seed_b), k, target = args.seeds, args.rewind_epoch, args.sparsity
    with torch.device("meta"):
        shape = cli.model(args, data)  # what every mask must fit (no memory, no init)
    mask, _ = cli.load_masks(args.mask, args, seed=seed_a, sparsity=target, producer="imp", model=shape)
    permuted = {method: cli.load_masks(path, args, seed=seed_a, sparsity=target, producer="permute_mask", model=shape,
                                       permuted_by=method, seed_b=seed_b)[0]
                for method, path in args.permuted_mask}
    runs = sparse_runs(
        a_rewind=cli.load_model_state(args.a_rewind, args, seed=seed_a, epoch=k),
        b_rewind=cli.load_model_state(args.b_rewind, args, seed=seed_b, epoch=k),
        mask=mask, permuted_masks=permuted, variants=args.variants, seed=args.seed, sparsity=target,
    )
    cfg = cli.train_config(args).remaining(args.rewind_epoch)
    tags = {k: _number_or_text(v) for k, v in args.tag}
    for run in runs.values():
        cli.log(f"--- {run.name}: {cfg.epochs} epochs from epoch {args.rewind_epoch}, "
                f"sparsity {sparsity(run.mask):.4f}")
        model = cli.model(args, data).to(device)
        model.load_state_dict(run.start)
        name = f"rule train_sparse (width {args.width:g}, seeds {seed_a}-{seed_b}, sparsity {target:g}, k {k}, " \
               f"run {run.name})"
        t0 = time.perf_counter()
        result = train(model, data, cfg, seed=run.seed, runtime=rt, masks=run.mask,
                       checkpoint=args.out_dir / run.name / "train.ckpt", log=cli.log,
                       guard=cli.guard(name, "sparse.train"))
        wall_s = time.perf_counter() - t0  # of this job's share of the run: a resumed run counts from the resume
        if args.save_logits == "true":
            logits, labels = test_logits(model, data, amp=rt.amp)
            save_artifact(args.out_dir / run.name / "logits.pt", "test_logits",
                          {"logits": logits.to(torch.float16), "labels": labels}, **(tags | meta), run=run.name,
                          rewind_epoch=args.rewind_epoch, sparsity=target)
        save_json(args.out_dir / run.name / "metrics.json", {
            **tags, **meta, "variant": run.variant, "match_method": run.match_method,
            "rewind_epoch": args.rewind_epoch, "sparsity": target,
            "actual_sparsity": sparsity(run.mask), "kept_weights": kept_count(run.mask), "epochs": cfg.epochs,
            "wall_s": round(wall_s, 3), "environment": environment(device),
            **{k: result.final[k] for k in ("test_acc", "test_loss", "train_acc", "train_loss")},
            "history": result.history,
        })
    for name in runs:  # only once every run is safely written: a crash resumes from these
        (args.out_dir / name / "train.ckpt").unlink(missing_ok=True)


if __name__ == "__main__":
    cli.main(main)
