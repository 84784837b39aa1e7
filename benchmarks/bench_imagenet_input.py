#!/usr/bin/env python
"""Images/s of the two ImageNet input paths: JPEGs decoded on the device vs PIL in DataLoader workers.

Writes an ImageFolder tree of ImageNet-sized JPEGs (about 500x375, smooth content plus noise, so
the files are as large and as slow to decode as real photos) and times full epochs of
``ImageFolderDataset.train_batches`` at 224x224 with random-resized-crop and flip, batches
ending normalized on the device, for:

* ``device``: workers read bytes; decode_jpeg in batches (nvJPEG on CUDA), crop/flip on the device;
* ``workers N``: PIL decode + RandomResizedCrop + flip in N DataLoader workers (the CPU path).

No model runs: this is the input pipeline's ceiling, which training can at most reach.

  python benchmarks/bench_imagenet_input.py --device cuda --workers 4 8 16
  python benchmarks/bench_imagenet_input.py --device cpu --images 64 --workers 2   # logic only
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_tree(root: Path, images: int, classes: int = 8, seed: int = 0) -> None:
    """``root/{train,val}/<class>/*.JPEG``, ImageNet-sized photos' stand-ins (quality 90)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", images), ("val", classes)):
        for i in range(count):
            folder = root / split / f"n{i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            h, w = (375, 500) if i % 3 else (500, 375)
            low = rng.uniform(0, 255, size=(h // 25 + 1, w // 25 + 1, 3))
            img = np.kron(low, np.ones((25, 25, 1)))[:h, :w] + rng.normal(0, 12, size=(h, w, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i}.JPEG", quality=90)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(data, batch_size: int, epochs: int) -> float:
    """Images/s over ``epochs`` timed epochs, after one warmup batch (workers started, decoder loaded)."""
    next(iter(data.train_batches(batch_size, seed=0, epoch=99)))
    sync(data.device)
    t0 = time.perf_counter()
    seen = 0
    for epoch in range(epochs):
        for x, _ in data.train_batches(batch_size, seed=0, epoch=epoch):
            seen += len(x)
    sync(data.device)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=2048, help="training JPEGs written")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per path")
    p.add_argument("--workers", type=int, nargs="+", default=[4, 8, 16], help="worker counts of the PIL path")
    p.add_argument("--read-workers", type=int, default=4, help="workers reading bytes for the device path")
    p.add_argument("--root", type=Path, default=None, help="where to write the JPEGs (default: a temp folder)")
    args = p.parse_args()

    from ticketalign.data import load_dataset

    device = torch.device(args.device)
    root = args.root or Path(tempfile.mkdtemp(prefix="bench-imagenet-"))
    t0 = time.perf_counter()
    write_tree(root, args.images)
    size = sum(f.stat().st_size for f in (root / "train").rglob("*.JPEG")) / args.images / 1024
    print(f"{args.images} JPEGs written in {time.perf_counter() - t0:.1f} s ({size:.0f} KiB each) to {root}")
    data = load_dataset("imagenet", root=root).to(device)
    rows = []
    try:
        paths = [("device", dataclasses.replace(data, decode="device", num_workers=args.read_workers))]
        paths += [(f"workers {n}", dataclasses.replace(data, decode="workers", num_workers=n)) for n in args.workers]
        for name, d in paths:
            rate = images_per_s(d, args.batch_size, args.epochs)
            rows.append((name, d.num_workers, rate))
            print(f"  {name}: {rate:,.0f} images/s", flush=True)
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    print("\n| ImageNet input path | device | workers | images/s |\n|---|---|---|---|")
    for name, workers, rate in rows:
        print(f"| {name} | {device} | {workers} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
