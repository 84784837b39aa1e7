#!/usr/bin/env python
"""Permute IMP masks of A by the permutation pi that aligns A with B (same index maps as weights).

The permutation artifact carries the network's PermutationSpec, so no model or data is loaded.
Every input is checked to be what its path says (model, width, seeds, sparsity, matching method)
before anything is permuted, so a wrong file is named as the wrong one.
"""

import argparse

from ticketalign import cli
from ticketalign.artifacts import load_artifact, save_artifact
from ticketalign.permutation import PermutationSpec, apply_permutation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", required=True, help="dataset name (checked against the files)")
    cli.add_model_args(p)
    p.add_argument("--seeds", type=int, nargs=2, required=True, metavar=("A", "B"), help="seeds of A and B")
    p.add_argument("--sparsity", type=float, required=True, help="target sparsity of the mask")
    p.add_argument("--mask", required=True, help="A's mask (mask_s<sparsity>.pt)")
    p.add_argument("--methods", nargs="+", required=True, help="the matching method of each permutation")
    p.add_argument("--perms", nargs="+", required=True, help="permutations from match (perm.pt), one per method")
    p.add_argument("--outs", nargs="+", required=True, help="one output path per permutation, same order")
    args = p.parse_args()
    if not len(args.methods) == len(args.perms) == len(args.outs):
        p.error(f"{len(args.methods)} methods, {len(args.perms)} permutations and {len(args.outs)} output paths")

    seed_a, seed_b = args.seeds
    masks, mask_meta = cli.load_masks(args.mask, args, seed=seed_a, sparsity=args.sparsity, producer="imp")
    for method, src, dst in zip(args.methods, args.perms, args.outs):
        expect = cli.model_meta(args) | {"method": method, "seed_a": seed_a, "seed_b": seed_b}
        found, _ = load_artifact(src, "permutation", expect=expect, producer="match")
        spec = PermutationSpec.from_dict(found["spec"])
        try:  # strict: a mask tensor the spec does not know would silently stay unpermuted
            permuted = apply_permutation(spec, found["perm"], masks, strict=True)
        except ValueError as err:
            raise SystemExit(f"error: {args.mask} permuted by {src}: {err}") from err
        save_artifact(dst, "mask", permuted, **mask_meta | {"permuted_by": method, "seed_b": seed_b})
        cli.log(f"{args.mask} permuted by {src} -> {dst}")


if __name__ == "__main__":
    cli.main(main)
