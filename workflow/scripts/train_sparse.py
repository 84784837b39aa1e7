#!/usr/bin/env python
"""Sparse training from rewind epoch k for one (seed pair, sparsity, k): every mask variant.

lth:       A@k masked with A's IMP mask (the upper reference)
naive:     B@k masked with A's mask
permuted:  B@k masked with pi(A's mask), one run per matching method
random:    B@k masked with a random mask of the same per-layer density
Each run trains (epochs - k) epochs and writes <out-dir>/<run>/metrics.json.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the library, installed or not

from ticketalign import cli
from ticketalign.artifacts import load_artifact, save_json
from ticketalign.masks import random_masks_like, sparsity
from ticketalign.seeding import derive_seed
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
    p.add_argument("--seed", type=int, required=True, help="seed of the data order (shared by all variants)")
    p.add_argument("--rewind-epoch", type=int, required=True, help="k: runs train epochs - k epochs")
    p.add_argument("--a-init", required=True, help="A at epoch k")
    p.add_argument("--b-init", required=True, help="B at epoch k")
    p.add_argument("--mask", required=True, help="A's IMP mask")
    p.add_argument("--permuted-mask", type=_key_value, action="append", default=[], metavar="METHOD=PATH",
                   help="A's mask permuted by the METHOD matching (repeatable)")
    p.add_argument("--variants", nargs="+", choices=["lth", "naive", "permuted", "random"], required=True)
    p.add_argument("--tag", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="copied into every metrics.json (width, seeds, sparsity, ...)")
    p.add_argument("--out-dir", type=Path, required=True)
    args = p.parse_args()

    rt, device = cli.runtime(args)
    data = cli.dataset(args, device)
    meta = cli.model_meta(args)
    inits = {"a": cli.load_model_state(args.a_init, args), "b": cli.load_model_state(args.b_init, args)}
    mask, mask_meta = load_artifact(args.mask, "mask", expect=meta)
    runs = []  # (run name, variant, matching method, init, mask)
    if "lth" in args.variants:
        runs.append(("lth", "lth", "", inits["a"], mask))
    if "naive" in args.variants:
        runs.append(("naive", "naive", "", inits["b"], mask))
    if "permuted" in args.variants:
        if not args.permuted_mask:
            p.error("variant 'permuted' needs at least one --permuted-mask METHOD=PATH")
        for method, path in args.permuted_mask:
            permuted, _ = load_artifact(path, "mask", expect=meta | {"sparsity": mask_meta["sparsity"]})
            runs.append((f"permuted_{method}", "permuted", method, inits["b"], permuted))
    if "random" in args.variants:
        gen = torch.Generator().manual_seed(derive_seed(args.seed, round(mask_meta["sparsity"] * 1e6)))
        runs.append(("random", "random", "", inits["b"], random_masks_like(mask, gen)))

    cfg = cli.train_config(args, epochs=args.epochs - args.rewind_epoch)
    tags = {k: _number_or_text(v) for k, v in args.tag}
    for name, variant, method, init, run_mask in runs:
        cli.log(f"--- {name}: {cfg.epochs} epochs from epoch {args.rewind_epoch}, sparsity {sparsity(run_mask):.4f}")
        model = cli.model(args, data).to(device)
        model.load_state_dict(init)
        result = train(model, data, cfg, seed=args.seed, runtime=rt, masks=run_mask,
                       checkpoint=args.out_dir / name / "train.ckpt", log=cli.log)
        save_json(args.out_dir / name / "metrics.json", {
            **tags, **meta, "variant": variant, "match_method": method, "rewind_epoch": args.rewind_epoch,
            "sparsity": mask_meta["sparsity"], "actual_sparsity": sparsity(run_mask), "epochs": cfg.epochs,
            **{k: result.final[k] for k in ("test_acc", "test_loss", "train_acc", "train_loss")},
            "history": result.history,
        })
    for name, *_ in runs:  # only once every run is safely written: a crash resumes from these
        (args.out_dir / name / "train.ckpt").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
