#!/usr/bin/env python
"""Find the permutation pi of A's hidden units that aligns trained A with trained B."""

from pathlib import Path

import torch

from ticketalign import cli
from ticketalign.artifacts import save_artifact
from ticketalign.config import ActivationMatchingConfig, WeightMatchingConfig
from ticketalign.models import permutation_spec
from ticketalign.permutation.activation_matching import activation_matching
from ticketalign.permutation.weight_matching import weight_matching


def main() -> None:
    p = cli.parser(__doc__, train=False)
    p.add_argument("--method", choices=["weight", "activation"], required=True)
    p.add_argument("--model-a", required=True, help="trained dense A (final.pt)")
    p.add_argument("--model-b", required=True, help="trained dense B (final.pt)")
    p.add_argument("--seeds", type=int, nargs=2, required=True, metavar=("A", "B"),
                   help="seeds of A and B (checked against the files)")
    cli.add_config_args(p, WeightMatchingConfig, "weight matching (--method weight)")
    cli.add_config_args(p, ActivationMatchingConfig, "activation matching (--method activation)")
    p.add_argument("--out", type=Path, required=True, help="the permutation (perm.pt)")
    args = p.parse_args()

    if args.method == "weight":
        args.device = "cpu"  # linear assignments on the CPU; no GPU is claimed for it
    args.gpus = 1  # matching runs in one process, whatever runtime.gpus says for training
    _, device = cli.runtime(args)
    data = cli.dataset(args, device)
    models = []
    for path, seed in zip((args.model_a, args.model_b), args.seeds):
        m = cli.model(args, data).to(device)
        m.load_state_dict(cli.load_model_state(path, args, seed=seed))
        models.append(m)
    spec = permutation_spec(models[0], data.input_shape)
    if args.method == "weight":
        params = [{n: t.detach() for n, t in m.named_parameters()} for m in models]
        opts = cli.from_args(WeightMatchingConfig, args)
        perm, history = weight_matching(spec, *params, max_sweeps=opts.max_sweeps, tol=opts.tol, seed=opts.seed,
                                        log=cli.log)
        quality = {"objective_before": history[0], "objective_after": history[-1], "sweeps": len(history) - 1}
    else:
        opts = cli.from_args(ActivationMatchingConfig, args)
        batches = data.train_batches(opts.batch_size, seed=0, epoch=0, augment=False)  # clean images
        perm, quality = activation_matching(spec, *models, batches, max_batches=opts.batches)
    moved = {g: float((idx != torch.arange(len(idx))).float().mean()) for g, idx in perm.items()}
    cli.log(f"{args.method} matching: {quality}; fraction of units moved per group: {moved}")
    payload = {"perm": perm, "spec": spec.to_dict()}
    save_artifact(args.out, "permutation", payload, method=args.method, quality=quality, seed_a=args.seeds[0],
                  seed_b=args.seeds[1], **cli.model_meta(args))


if __name__ == "__main__":
    cli.main(main)
