#!/usr/bin/env python
"""Mask overlap of one seed pair: Jaccard similarity of A's IMP mask m_A with pi(m_A) per layer
and overall, for each matching method, and with m_A under a random permutation (the chance level).

The permutation artifacts carry the network's PermutationSpec, so no model or data is loaded.
"""

import argparse
from pathlib import Path

import torch

from ticketalign import cli
from ticketalign.analysis import chance_jaccard, chance_jaccard_masks, mask_jaccard
from ticketalign.artifacts import load_artifact, save_json
from ticketalign.masks import density
from ticketalign.permutation import PermutationSpec, apply_permutation, random_permutation
from ticketalign.seeding import derive_seed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--masks", nargs="+", required=True, help="A's masks (mask_s<sparsity>.pt), one per sparsity")
    p.add_argument("--permuted", nargs="*", default=[], help="A's masks permuted by a matching method (any order)")
    p.add_argument("--perm", required=True, help="one permutation artifact (perm.pt), for the network's spec")
    p.add_argument("--seed", type=int, required=True, help="seed of the random permutation (chance level)")
    p.add_argument("--out", type=Path, required=True, help="output JSON")
    args = p.parse_args()

    found, _ = load_artifact(args.perm, "permutation", producer="match")
    spec = PermutationSpec.from_dict(found["spec"])
    random_perm = random_permutation(spec, torch.Generator().manual_seed(derive_seed(args.seed, 7)))
    permuted = {}
    for path in args.permuted:
        m, meta = load_artifact(path, "mask", producer="permute_mask")
        permuted[(round(meta["sparsity"], 6), meta["permuted_by"])] = m
    rows = []
    for path in args.masks:
        mask, meta = load_artifact(path, "mask", producer="imp")
        sp = round(meta["sparsity"], 6)
        others = {method: m for (s, method), m in permuted.items() if s == sp}
        others["random"] = apply_permutation(spec, random_perm, mask, strict=True)
        for method, other in sorted(others.items()):
            for layer, value in mask_jaccard(mask, other).items():
                overall = layer == "overall"
                d = density(mask) if overall else mask[layer].float().mean().item()
                rows.append({"sparsity": meta["sparsity"], "method": method, "layer": layer, "jaccard": value,
                             "density": d, "chance": chance_jaccard_masks(mask) if overall else chance_jaccard(d)})
        overall = [r for r in rows if r["layer"] == "overall" and r["sparsity"] == meta["sparsity"]]
        cli.log(f"{path}: overall Jaccard " + ", ".join(f"{r['method']} {r['jaccard']:.3f}" for r in overall))
    save_json(args.out, {**{k: meta[k] for k in cli.MODEL_KEYS}, "seed_a": meta["seed"], "rows": rows})


if __name__ == "__main__":
    cli.main(main)
