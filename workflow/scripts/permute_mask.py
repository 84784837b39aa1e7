#!/usr/bin/env python
"""Permute IMP masks of A by the permutation pi that aligns A with B (same index maps as weights).

The permutation artifact carries the network's PermutationSpec, so no model or data is loaded.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the library, installed or not

from ticketalign import cli
from ticketalign.artifacts import load_artifact, save_artifact
from ticketalign.permutation import PermutationSpec, apply_permutation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--perm", required=True, help="permutation from match (perm.pt)")
    p.add_argument("--masks", nargs="+", required=True, help="A's masks (mask_s<sparsity>.pt)")
    p.add_argument("--outs", nargs="+", required=True, help="one output path per mask, same order")
    args = p.parse_args()
    if len(args.masks) != len(args.outs):
        p.error(f"{len(args.masks)} masks but {len(args.outs)} output paths")

    found, perm_meta = load_artifact(args.perm, "permutation")
    spec = PermutationSpec.from_dict(found["spec"])
    same_model = {k: perm_meta[k] for k in ("model", "width", "dataset", "model_options")}
    for src, dst in zip(args.masks, args.outs):
        masks, mask_meta = load_artifact(src, "mask", expect=same_model)
        unknown = sorted(set(masks) - set(spec.axes_to_perm))
        if unknown:  # a tensor the spec does not know would silently stay unpermuted
            raise SystemExit(f"{src}: mask tensors {unknown} are not in the model's permutation spec")
        permuted = apply_permutation(spec, found["perm"], masks)
        save_artifact(dst, "mask", permuted, **mask_meta | {"permuted_by": perm_meta["method"]})
        cli.log(f"{src} -> {dst}")


if __name__ == "__main__":
    main()
