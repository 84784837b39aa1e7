#!/usr/bin/env python
"""Linear mode connectivity of one seed pair: test loss and error on the line A <-> B and on the
line pi(A) <-> B for each matching method's pi (BatchNorm statistics recomputed at every point).

Writes one JSON with every point of every line and each line's barrier height.
"""

import argparse
from pathlib import Path

from ticketalign import cli
from ticketalign.analysis import barrier, linear_path
from ticketalign.artifacts import load_artifact, save_json
from ticketalign.config import DiagnosticsConfig
from ticketalign.permutation import PermutationSpec, apply_permutation


def _method_path(text: str) -> tuple[str, str]:
    method, sep, path = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected METHOD=PATH, got {text!r}")
    return method, path


def main() -> None:
    p = cli.parser(__doc__, train=False)
    p.add_argument("--model-a", required=True, help="trained dense A (final.pt)")
    p.add_argument("--model-b", required=True, help="trained dense B (final.pt)")
    p.add_argument("--seed-a", type=int, required=True, help="seed of A (recorded in the output)")
    p.add_argument("--seed-b", type=int, required=True, help="seed of B (recorded in the output)")
    p.add_argument("--perm", type=_method_path, action="append", default=[], metavar="METHOD=PATH",
                   help="the A->B permutation of a matching method (perm.pt; repeatable)")
    cli.add_config_args(p, DiagnosticsConfig, "linear mode connectivity",
                        only=("lmc_points", "bn_batches", "bn_batch_size"))
    p.add_argument("--out", type=Path, required=True, help="output JSON")
    args = p.parse_args()

    _, device = cli.runtime(args)
    data = cli.dataset(args, device)
    a = cli.load_model_state(args.model_a, args, seed=args.seed_a)
    b = cli.load_model_state(args.model_b, args, seed=args.seed_b)
    model = cli.model(args, data).to(device)
    lines = [("A <-> B", "", a)]
    for method, path in args.perm:
        expect = cli.model_meta(args) | {"method": method, "seed_a": args.seed_a, "seed_b": args.seed_b}
        found, _ = load_artifact(path, "permutation", expect=expect, producer="match")
        spec = PermutationSpec.from_dict(found["spec"])
        lines.append((f"pi(A) <-> B ({method})", method, apply_permutation(spec, found["perm"], a)))
    out = []
    for name, method, start in lines:
        rows = linear_path(model, {k: v.to(device) for k, v in start.items()}, {k: v.to(device) for k, v in b.items()},
                           data, points=args.lmc_points, bn_batches=args.bn_batches, bn_batch_size=args.bn_batch_size)
        out.append({"line": name, "match_method": method, "points": rows,
                    "barrier_loss": barrier([r["test_loss"] for r in rows]),
                    "barrier_error": barrier([r["test_error"] for r in rows])})
        cli.log(f"{name}: loss barrier {out[-1]['barrier_loss']:.4f}, error barrier {out[-1]['barrier_error']:.2f}")
    save_json(args.out, {**cli.model_meta(args), "seed_a": args.seed_a, "seed_b": args.seed_b,
                         "model_a": args.model_a, "model_b": args.model_b, "lines": out})


if __name__ == "__main__":
    cli.main(main)
