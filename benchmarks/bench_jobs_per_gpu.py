#!/usr/bin/env python
"""Total throughput of N concurrent ResNet20 trainings sharing one device.

A ResNet20 x1 job at batch 128 leaves a modern GPU mostly idle (small kernels, launch-bound), so
several such jobs on one GPU may finish a grid sooner than one job at a time. This measures it:
for each N, N worker processes each build CIFAR-shaped random data resident on the device and a
ResNet20, train one warmup epoch, wait for a common start time, then train ``--epochs`` timed
epochs with ticketalign's training loop. Total samples/s = all timed samples / (last finish -
common start). Process start-up and warmup are outside the timed window.

Each worker first claims its share of the device through the slot claimer the pipeline's jobs
use (``ticketalign.gpu.claim_slot`` with ``per_gpu = N``, keyed by the GPU's UUID, locks in a
folder of this run), so N jobs sharing one GPU is exercised as ``runtime.jobs_per_gpu = N`` runs it.

  python benchmarks/bench_jobs_per_gpu.py --device cuda --jobs 1 2 4
  python benchmarks/bench_jobs_per_gpu.py --device cpu --jobs 1 2 --images 512   # logic only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(args: argparse.Namespace) -> None:
    """One job: warm up, wait for the shared start time, train, print one JSON line."""
    import torch

    sys.path.insert(0, str(HERE))
    from bench_train import NO_EVAL, cifar_shaped, sync

    from ticketalign import gpu
    from ticketalign.models import build_model
    from ticketalign.train import Runtime, TrainConfig, train

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    key = gpu.device_keys(torch.cuda.device_count())[device.index or 0] if device.type == "cuda" else "cpu"
    slot = gpu.claim_slot([key or "gpu"], args.lock_dir, per_gpu=args.jobs, timeout=args.startup_seconds)
    data = cifar_shaped(args.images, 256, device, seed=args.worker_id)
    runtime = Runtime(amp=args.amp, channels_last=device.type == "cuda", eval_every=NO_EVAL)
    model = build_model("resnet20", (3, 32, 32), 10, width=args.width, seed=args.worker_id).to(device)
    train(model, data, TrainConfig(epochs=1, lr=0.05, batch_size=args.batch_size), seed=0, runtime=runtime,
          log=None)  # warmup: kernels chosen, memory allocated
    sync(device)
    time.sleep(max(0.0, args.start_at - time.time()))
    t0 = time.time()
    train(model, data, TrainConfig(epochs=args.epochs, lr=0.05, batch_size=args.batch_size), seed=1,
          runtime=runtime, log=None)
    sync(device)
    print(json.dumps({"worker": args.worker_id, "samples": args.images * args.epochs, "start": t0,
                      "end": time.time(), "slot": slot.share}), flush=True)


def measure(n: int, args: argparse.Namespace) -> dict[str, float]:
    """Run ``n`` workers at once; total and per-job samples/s over the common timed window."""
    start_at = time.time() + args.startup_seconds
    lock_dir = tempfile.mkdtemp(prefix="bench-jobs-per-gpu-")
    cmd = [sys.executable, __file__, "--worker", "--device", args.device, "--images", str(args.images),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--width", str(args.width),
           "--threads", str(args.threads), "--start-at", str(start_at), "--amp", str(int(args.amp)),
           "--jobs", str(n), "--lock-dir", lock_dir, "--startup-seconds", str(args.startup_seconds)]
    procs = [subprocess.Popen([*cmd, "--worker-id", str(i)], stdout=subprocess.PIPE, text=True) for i in range(n)]
    rows = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"worker failed (rc {p.returncode}); N={n}")
        rows.append(json.loads(out.strip().splitlines()[-1]))
    if sorted(r["slot"] for r in rows) != list(range(n)):
        raise SystemExit(f"the slot claimer gave N={n} jobs the slots {sorted(r['slot'] for r in rows)}")
    late = [r for r in rows if r["start"] > start_at + 1.0]
    if late:
        print(f"  warning: {len(late)} of {n} workers started their timed epochs late; raise --startup-seconds")
    window = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    total = sum(r["samples"] for r in rows) / window
    return {"jobs": n, "total_samples_per_s": total, "per_job_samples_per_s": total / n, "window_s": window}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4], help="numbers of concurrent jobs to try")
    p.add_argument("--images", type=int, default=20_000, help="training images per job")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per job")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per job")
    p.add_argument("--amp", type=int, default=1, help="bf16 autocast (1) or fp32 (0)")
    p.add_argument("--startup-seconds", type=float, default=45.0,
                   help="time allowed for every worker to start and warm up before the timed window")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--lock-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.amp = bool(args.amp)
    if args.worker:
        args.jobs = args.jobs[0]
        worker(args)
        return
    print(f"ResNet20 x{args.width:g}, {args.images:,} images/job, {args.epochs} timed epochs, batch "
          f"{args.batch_size}, {args.device}, amp={args.amp}")
    rows = []
    for n in args.jobs:
        row = measure(n, args)
        rows.append(row)
        print(f"  N={n}: total {row['total_samples_per_s']:,.0f} samples/s, per job "
              f"{row['per_job_samples_per_s']:,.0f} ({row['window_s']:.1f} s window)", flush=True)
    base = rows[0]["total_samples_per_s"]
    print("\n| concurrent jobs | device | total samples/s | per job | total vs first |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['jobs']} | {args.device} | {row['total_samples_per_s']:,.0f} | "
              f"{row['per_job_samples_per_s']:,.0f} | {row['total_samples_per_s'] / base:.2f}x |")


if __name__ == "__main__":
    main()
