#!/usr/bin/env python
"""Iterative magnitude pruning of dense model A up to one target sparsity.

All targets share one chain of levels: trained levels are cached under <out-dir>/levels, so the
job for the next target (or a rerun after a crash) trains only the levels not on disk yet.
"""

from pathlib import Path

from ticketalign import cli
from ticketalign.artifacts import save_artifact, save_json
from ticketalign.config import ImpConfig
from ticketalign.masks import dense_masks, sparsity, total_count
from ticketalign.provenance import environment
from ticketalign.pruning import plan_imp, run_imp


def main() -> None:
    p = cli.parser(__doc__)
    cli.add_config_args(p, ImpConfig, "IMP", only=("prune_rate",))
    p.add_argument("--seed", type=int, required=True, help="seed of model A")
    p.add_argument("--dense", required=True, help="trained dense A (final.pt)")
    p.add_argument("--reset-state", default=None,
                   help="A at imp.reset_epoch: IMP resets the survivors to it after each prune (mode reset)")
    p.add_argument("--reset-epoch", type=int, default=None, help="the epoch of --reset-state (checked in the file)")
    p.add_argument("--sparsity", type=float, required=True, help="target sparsity of the mask")
    p.add_argument("--out-dir", type=Path, required=True, help="writes mask_s<sparsity>.pt, metrics_s<sparsity>.json")
    args = p.parse_args()

    rt, device = cli.runtime(args)
    data = cli.dataset(args, device)
    model = cli.model(args, data).to(device)
    model.load_state_dict(cli.load_model_state(args.dense, args, seed=args.seed))
    reset = None
    if args.reset_state:
        reset = cli.load_model_state(args.reset_state, args, seed=args.seed, epoch=args.reset_epoch)
    plan = plan_imp(total_count(dense_masks(model)), [args.sparsity], args.prune_rate)
    cli.log(f"IMP chain: {plan.trained_levels} trained levels, targets {plan.targets}")
    meta = cli.model_meta(args) | {"seed": args.seed}

    def emit(target, masks):
        save_artifact(args.out_dir / f"mask_s{target:g}.pt", "mask", masks, sparsity=target, **meta)
        cli.log(f"mask for target {target:g}: sparsity {sparsity(masks):.6f}")

    levels = run_imp(
        model, data, plan=plan, train_cfg=cli.train_config(args), seed=args.seed, cache_dir=args.out_dir / "levels",
        reset_state=reset, runtime=rt, on_target=emit, log=cli.log,
        guard=cli.guard(f"rule imp (width {args.width:g}, seed {args.seed}, target sparsity {args.sparsity:g})",
                        "imp.train"),
    )
    save_json(args.out_dir / f"metrics_s{args.sparsity:g}.json", {
        **meta, "mode": "reset" if reset else "ft", "sparsity": args.sparsity,
        "chain_levels": plan.trained_levels, "levels": levels, "environment": environment(device),
    })


if __name__ == "__main__":
    cli.main(main)
