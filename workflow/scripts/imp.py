#!/usr/bin/env python
"""Iterative magnitude pruning of dense model A up to one target sparsity.

All targets share one chain of levels: trained levels are cached under <out-dir>/levels, so the
job for the next target (or a rerun after a crash) trains only the levels not on disk yet.
"""

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the library, installed or not

from ticketalign import cli
from ticketalign.artifacts import save_artifact, save_json
from ticketalign.masks import dense_masks, sparsity, total_count
from ticketalign.pruning import plan_imp, run_imp
from ticketalign.train import state_fingerprint


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--seed", type=int, required=True, help="seed of model A")
    p.add_argument("--dense", required=True, help="trained dense A (final.pt)")
    p.add_argument("--rewind-state", default=None, help="A at the rewind epoch: IMP with rewinding")
    p.add_argument("--prune-rate", type=float, default=0.2, help="fraction of remaining weights pruned per level")
    p.add_argument("--sparsity", type=float, required=True, help="target sparsity of the mask")
    p.add_argument("--out-dir", type=Path, required=True, help="writes mask_s<sparsity>.pt, metrics_s<sparsity>.json")
    args = p.parse_args()

    rt, device = cli.runtime(args)
    data = cli.dataset(args, device)
    model = cli.model(args, data).to(device)
    model.load_state_dict(cli.load_model_state(args.dense, args))
    rewind = cli.load_model_state(args.rewind_state, args) if args.rewind_state else None
    cfg = cli.train_config(args)
    plan = plan_imp(total_count(dense_masks(model)), [args.sparsity], args.prune_rate)
    # Everything that determines the chain's levels (not the targets: a level does not depend on
    # them), so cached levels are shared by every target's job and never reused across recipes.
    recipe = {"train": dataclasses.asdict(cfg), "prune_rate": args.prune_rate, "seed": args.seed, "amp": args.amp,
              "model": cli.model_meta(args), "dense": state_fingerprint(model.state_dict()),
              "rewind": state_fingerprint(rewind) if rewind is not None else None}
    fingerprint = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    cli.log(f"IMP chain: {plan.trained_levels} trained levels, targets {plan.targets}")
    meta = cli.model_meta(args) | {"seed": args.seed}

    def emit(target, masks):
        save_artifact(args.out_dir / f"mask_s{target:g}.pt", "mask", masks, sparsity=target, **meta)
        cli.log(f"mask for target {target:g}: sparsity {sparsity(masks):.6f}")

    levels = run_imp(
        model, data, plan=plan, train_cfg=cfg, seed=args.seed, fingerprint=fingerprint,
        cache_dir=args.out_dir / "levels", rewind_state=rewind, runtime=rt, on_target=emit, log=cli.log,
    )
    save_json(args.out_dir / f"metrics_s{args.sparsity:g}.json", {
        **meta, "mode": "rewind" if rewind else "ft", "sparsity": args.sparsity,
        "chain_levels": plan.trained_levels, "levels": levels,
    })


if __name__ == "__main__":
    main()
