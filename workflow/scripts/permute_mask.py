#!/usr/bin/env python
"""Permute IMP masks of A by the permutation pi that aligns A with B (same index maps as weights).

The permutation artifact carries the network's PermutationSpec, so no model or data is loaded.
"""

import argparse

from ticketalign import cli
from ticketalign.artifacts import load_artifact, save_artifact
from ticketalign.cli import MODEL_KEYS
from ticketalign.permutation import PermutationSpec, apply_permutation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mask", required=True, help="A's mask (mask_s<sparsity>.pt)")
    p.add_argument("--perms", nargs="+", required=True, help="permutations from match (perm.pt), one per method")
    p.add_argument("--outs", nargs="+", required=True, help="one output path per permutation, same order")
    args = p.parse_args()
    if len(args.perms) != len(args.outs):
        p.error(f"{len(args.perms)} permutations but {len(args.outs)} output paths")

    masks, mask_meta = load_artifact(args.mask, "mask")
    for src, dst in zip(args.perms, args.outs):
        found, perm_meta = load_artifact(src, "permutation", expect={k: mask_meta[k] for k in MODEL_KEYS})
        spec = PermutationSpec.from_dict(found["spec"])
        try:  # strict: a mask tensor the spec does not know would silently stay unpermuted
            permuted = apply_permutation(spec, found["perm"], masks, strict=True)
        except ValueError as err:
            raise SystemExit(f"{args.mask} permuted by {src}: {err}") from err
        save_artifact(dst, "mask", permuted, **mask_meta | {"permuted_by": perm_meta["method"]})
        cli.log(f"{args.mask} permuted by {src} -> {dst}")


if __name__ == "__main__":
    main()
