#!/usr/bin/env python
"""Train one dense model from its seed; save snapshots at the rewind epochs and the final state.

Epoch 0 is the initialization itself, epoch k the state after exactly k full epochs.
"""

import os
from pathlib import Path

from ticketalign import cli
from ticketalign.artifacts import save_artifact, save_json
from ticketalign.provenance import environment
from ticketalign.train import train


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--seed", type=int, required=True, help="seed of the initialization and data order")
    p.add_argument("--snapshot-epochs", type=int, nargs="*", default=[], help="epochs to save (0 = init)")
    p.add_argument("--out-dir", type=Path, required=True, help="writes ep<k>.pt, final.pt, metrics.json")
    args = p.parse_args()

    rt, device = cli.runtime(args)
    data = cli.dataset(args, device)
    model = cli.model(args, data, seed=args.seed).to(device)
    cfg = cli.train_config(args)
    meta = cli.model_meta(args) | {"seed": args.seed}

    # Snapshots go to a cache folder first and are moved into place at the end: Snakemake deletes
    # a failed job's outputs, and a resumed run must still find the snapshots taken before the crash.
    cache = args.out_dir / ".snapshots"

    def snapshot(epoch, m):
        save_artifact(cache / f"ep{epoch}.pt", "model_state", m.state_dict(), epoch=epoch, **meta)

    cli.log(f"dense {args.model} w{args.width:g} seed {args.seed}: {cfg}")
    result = train(
        model, data, cfg, seed=args.seed, runtime=rt, snapshot_epochs=tuple(args.snapshot_epochs),
        on_snapshot=snapshot, checkpoint=args.out_dir / "train.ckpt", log=cli.log,
        guard=cli.guard(f"rule train_dense (width {args.width:g}, seed {args.seed})", "dense"),
    )
    if not cli.distributed.is_main():
        return  # another process of a multi-GPU job: rank 0 writes the files
    for k in args.snapshot_epochs:
        os.replace(cache / f"ep{k}.pt", args.out_dir / f"ep{k}.pt")
    save_artifact(args.out_dir / "final.pt", "model_state", model.state_dict(), epoch=cfg.epochs, **meta)
    save_json(args.out_dir / "metrics.json", {**meta, **result.final, "environment": environment(device),
                                                   "history": result.history})
    (args.out_dir / "train.ckpt").unlink(missing_ok=True)


if __name__ == "__main__":
    cli.main(main)
