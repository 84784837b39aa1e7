#!/usr/bin/env python
"""How much does ticketalign's training loop cost over a bare PyTorch loop?

In one run, for each case, the project's loop (:func:`ticketalign.train.train`) and a bare
hand-written loop (``torch.optim.SGD``, the same model, data, batch size, device, number of
steps, augmentation and cosine learning rate) train from the same initialization; the first
epoch of each is warmup and is not timed. Measurements alternate between the two loops and the
median over ``--repeats`` is reported, so a noisy neighbour hurts both alike.

Cases (CPU):
  resnet20-x1   ResNet20 width 1 on CIFAR-shaped random uint8 images, batch 128, random crop +
                flip (the dataset's own vectorised augmentation, also used by the bare loop)
  mlp-digits    the embedded default: MLP 64-128-128-10 on scikit-learn's digits, batch 64
  ...-masked    the same with a 90% mask kept applied (sparse training: both loops zero the
                pruned gradients before and the pruned weights after every step)

On CUDA (when present) it also times one ResNet20 x1 epoch over 50,000 CIFAR-shaped images
for the GPU-resident path (the whole uint8 set on the GPU, augmented there) against a
torchvision DataLoader path (a dataset of uint8 tensors with RandomCrop/RandomHorizontalFlip
transforms, worker processes, pinned memory). ``--loader-check`` runs that comparison on the
CPU with a small set, to exercise it where there is no GPU.

  python benchmarks/bench_train.py                 # the table; about 3 minutes on 2 CPU cores
  python benchmarks/bench_train.py --profile       # + where train() spends its time (ResNet20)
  python benchmarks/bench_train.py --device cuda --recipes   # + fp32/bf16, eager/compile, ResNet20 x1 and x4
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ticketalign.data import IMAGENET_MEAN, IMAGENET_STD, InMemoryDataset, load_dataset, random_crop_flip
from ticketalign.gpu import resolve_device
from ticketalign.masks import dense_masks
from ticketalign.models import build_model
from ticketalign.train import Runtime, TrainConfig, lr_factor, train

NO_EVAL = 10**9  # train() evaluates only after its last epoch


@dataclass
class Case:
    name: str
    make_model: Callable[[], nn.Module]
    data: InMemoryDataset
    batch_size: int
    timed_epochs: int
    sparsity: float = 0.0


def cifar_shaped(n_train: int, n_test: int, device: torch.device, seed: int = 0) -> InMemoryDataset:
    """Random uint8 images shaped like CIFAR-10, normalized and augmented as CIFAR-10 is."""
    g = torch.Generator().manual_seed(seed)
    stats = lambda v: torch.tensor(v).view(-1, 1, 1)  # noqa: E731
    return InMemoryDataset(
        name="cifar-shaped",
        x_train=torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=g),
        y_train=torch.randint(0, 10, (n_train,), generator=g),
        x_test=torch.randint(0, 256, (n_test, 3, 32, 32), dtype=torch.uint8, generator=g),
        y_test=torch.randint(0, 10, (n_test,), generator=g),
        num_classes=10,
        mean=stats(IMAGENET_MEAN),
        std=stats(IMAGENET_STD),
        augment=True,
    ).to(device)


def random_masks(model: nn.Module, sparsity: float, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(m.shape, generator=g) >= sparsity for n, m in dense_masks(model).items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_project_loop(case: Case, device: torch.device, runtime: Runtime) -> float:
    """Samples/s of ticketalign.train.train over the timed epochs (its own per-epoch timer)."""
    model = case.make_model().to(device)
    masks = random_masks(model, case.sparsity) if case.sparsity else None
    cfg = TrainConfig(epochs=1 + case.timed_epochs, lr=0.05, batch_size=case.batch_size)
    result = train(model, case.data, cfg, seed=0, runtime=runtime, masks=masks, log=None)
    timed = result.history[1:]
    seen = case.data.num_train * len(timed)
    return seen / sum(case.data.num_train / row["samples_per_s"] for row in timed)


def time_bare_loop(case: Case, device: torch.device, amp: bool = False, channels_last: bool = False) -> float:
    """Samples/s of a plain PyTorch loop doing the same work as train() (the reference)."""
    data = case.data
    model = case.make_model().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    masks = random_masks(model, case.sparsity) if case.sparsity else {}
    params = dict(model.named_parameters())
    masked = [(params[n], m.to(device)) for n, m in masks.items()]
    with torch.no_grad():
        for p, m in masked:
            p.mul_(m)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    n, bs = data.num_train, case.batch_size
    epochs = 1 + case.timed_epochs
    total_steps = math.ceil(n / bs) * epochs
    step, elapsed = 0, 0.0
    for epoch in range(epochs):
        model.train()
        sync(device)
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(1000 + epoch)
        order = torch.randperm(n, generator=gen).to(device)
        if data.augment:
            shifts = torch.randint(0, 2 * data.crop_padding + 1, (n, 2), generator=gen).to(device)
            flips = (torch.rand(n, generator=gen) < 0.5).to(device)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            if data.augment:
                window = slice(start, start + bs)
                x = random_crop_flip(data.x_train, idx, shifts[window], flips[window], data.crop_padding)
            else:
                x = data.x_train[idx]
            x, y = data.prepare(x), data.y_train[idx]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for group in opt.param_groups:
                group["lr"] = 0.05 * lr_factor(step, total_steps, 0)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for p, m in masked:
                p.grad.mul_(m)
            opt.step()
            if masked:
                with torch.no_grad():
                    for p, m in masked:
                        p.mul_(m)
            step += 1
        sync(device)
        if epoch > 0:  # the first epoch is warmup
            elapsed += time.perf_counter() - t0
    return n * case.timed_epochs / elapsed


def compare(cases: list[Case], device: torch.device, repeats: int) -> list[tuple[str, float, float]]:
    cuda = device.type == "cuda"
    runtime = Runtime(amp=cuda, channels_last=cuda, eval_every=NO_EVAL)
    rows = []
    for case in cases:
        ours, bare = [], []
        for rep in range(repeats):
            # alternate which loop goes first, so drift in machine load hits both alike
            for which in ((0, 1) if rep % 2 == 0 else (1, 0)):
                if which == 0:
                    ours.append(time_project_loop(case, device, runtime))
                else:
                    bare.append(time_bare_loop(case, device, amp=cuda, channels_last=cuda))
        rows.append((case.name, statistics.median(ours), statistics.median(bare)))
        print(f"  {case.name}: train() {[round(v) for v in ours]}, bare {[round(v) for v in bare]} samples/s",
              flush=True)
    return rows


# ------------------------------------------------------------------------------------------
# GPU-resident data vs a torchvision DataLoader (CUDA)
# ------------------------------------------------------------------------------------------


class UInt8ImageDataset(torch.utils.data.Dataset):
    """torchvision.datasets-like: uint8 (C, H, W) tensors with a per-sample transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform else x), self.labels[i]


def dataloader_epoch_time(data: InMemoryDataset, device: torch.device, batch_size: int, workers: int,
                          epochs: int = 3) -> float:
    """Seconds per epoch (after one warmup epoch) of ResNet20 x1 fed by a DataLoader."""
    from torchvision.transforms import v2  # deferred: ~2 s to import

    transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
    dataset = UInt8ImageDataset(data.x_train.cpu(), data.y_train.cpu(), transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, drop_last=False,
    )
    cuda = device.type == "cuda"
    model = build_model("resnet20", (3, 32, 32), 10, seed=0).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    mean, std = data.mean.to(device), data.std.to(device)
    times = []
    for _ in range(epochs + 1):
        model.train()
        sync(device)
        t0 = time.perf_counter()
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            x = (x.float().div_(255) - mean) / std
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def resident_epoch_time(data: InMemoryDataset, device: torch.device, batch_size: int, epochs: int = 3) -> float:
    """Seconds per epoch (after one warmup epoch) of ticketalign.train.train, data on the device."""
    cuda = device.type == "cuda"
    model = build_model("resnet20", (3, 32, 32), 10, seed=0).to(device)
    runtime = Runtime(amp=cuda, channels_last=cuda, eval_every=NO_EVAL)
    cfg = TrainConfig(epochs=1 + epochs, lr=0.05, batch_size=batch_size)
    times = []
    t_last = [0.0]

    def on_epoch(epoch: int, _model: nn.Module) -> None:  # called after every epoch: wall clock
        sync(device)
        now = time.perf_counter()
        times.append(now - t_last[0])
        t_last[0] = now

    sync(device)
    t_last[0] = time.perf_counter()
    train(model, data, cfg, seed=0, runtime=runtime, snapshot_epochs=tuple(range(1, 2 + epochs)),
          on_snapshot=on_epoch, log=None)
    # the last epoch also includes the final evaluation: time only the epochs before it
    return statistics.median(times[1:-1]) if len(times) > 2 else times[-1]


def loader_comparison(device: torch.device, n_train: int, batch_size: int, workers: list[int]) -> None:
    data = cifar_shaped(n_train, 1000, device)
    print(f"\nResNet20 x1, {n_train:,} CIFAR-shaped images, batch {batch_size}, {device}: seconds per epoch")
    resident = resident_epoch_time(data, device, batch_size)
    print(f"  {'GPU-resident (ticketalign.train.train)' if device.type == 'cuda' else 'resident (train())':44s}"
          f"{resident:8.2f} s")
    for w in workers:
        t = dataloader_epoch_time(data, device, batch_size, w)
        label = f"DataLoader, {w} workers{', pinned memory' if device.type == 'cuda' else ''}"
        print(f"  {label:44s}{t:8.2f} s   ({t / resident:.2f}x resident)")


def recipe_epoch_rate(data: InMemoryDataset, device: torch.device, width: float, runtime: Runtime,
                      batch_size: int, epochs: int = 2) -> float:
    """Samples/s of train() on ResNet20 at ``width`` under ``runtime``, after one warmup epoch
    (the warmup also absorbs torch.compile's first compilation)."""
    model = build_model("resnet20", (3, 32, 32), 10, width=width, seed=0).to(device)
    cfg = TrainConfig(epochs=1 + epochs, lr=0.05, batch_size=batch_size)
    result = train(model, data, cfg, seed=0, runtime=runtime, log=None)
    timed = result.history[1:]
    return data.num_train * len(timed) / sum(data.num_train / row["samples_per_s"] for row in timed)


def recipe_matrix(device: torch.device, widths: list[float], n_train: int, batch_size: int,
                  compile_too: bool) -> list[tuple[str, float]]:
    """fp32 vs bf16 autocast, eager vs torch.compile, for each ResNet20 width (data resident)."""
    data = cifar_shaped(n_train, 256, device)
    cuda = device.type == "cuda"
    recipes = [("fp32 eager", Runtime(amp=False, channels_last=cuda, eval_every=NO_EVAL)),
               ("bf16 eager", Runtime(amp=True, channels_last=cuda, eval_every=NO_EVAL))]
    if compile_too:
        recipes.append(("bf16 compile", Runtime(amp=True, channels_last=cuda, compile=True, eval_every=NO_EVAL)))
    rows = []
    for width in widths:
        for label, runtime in recipes:
            t0 = time.perf_counter()
            rate = recipe_epoch_rate(data, device, width, runtime, batch_size)
            name = f"resnet20-x{width:g} {label}"
            rows.append((name, rate))
            print(f"  {name}: {rate:,.0f} samples/s ({time.perf_counter() - t0:.0f} s incl. warmup)", flush=True)
    return rows


# ------------------------------------------------------------------------------------------


def profile_train(case: Case, device: torch.device) -> None:
    """Where train() spends its time on this case: cProfile by function, then torch ops."""
    runtime = Runtime(eval_every=NO_EVAL)
    model = case.make_model().to(device)
    cfg = TrainConfig(epochs=1 + case.timed_epochs, lr=0.05, batch_size=case.batch_size)
    prof = cProfile.Profile()
    prof.enable()
    train(model, case.data, cfg, seed=0, runtime=runtime, log=None)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
    print(f"\ncProfile of train() on {case.name} (by own time):\n{out.getvalue()}")
    from torch.profiler import ProfilerActivity, profile

    model = case.make_model().to(device)
    with profile(activities=[ProfilerActivity.CPU]) as p:
        train(model, case.data, TrainConfig(epochs=1, lr=0.05, batch_size=case.batch_size), seed=0,
              runtime=runtime, log=None)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="alternating measurements per loop (median)")
    p.add_argument("--resnet-steps", type=int, default=20, help="timed steps per ResNet20 epoch")
    p.add_argument("--resnet-epochs", type=int, default=2, help="timed ResNet20 epochs per measurement")
    p.add_argument("--mlp-epochs", type=int, default=30, help="timed digits epochs (22 steps each)")
    p.add_argument("--no-masked", action="store_true", help="skip the masked (sparse-training) cases")
    p.add_argument("--only", nargs="+", default=None, metavar="CASE", help="run only these cases")
    p.add_argument("--profile", action="store_true", help="profile train() on ResNet20 x1 afterwards")
    p.add_argument("--loader-check", action="store_true",
                   help="run the DataLoader comparison even without CUDA (small set, on the CPU)")
    p.add_argument("--workers", type=int, nargs="+", default=[4, 8], help="DataLoader workers to try (CUDA)")
    p.add_argument("--recipes", action="store_true",
                   help="fp32 vs bf16, eager vs compile, ResNet20 at --recipe-widths (data resident)")
    p.add_argument("--recipe-widths", type=float, nargs="+", default=[1, 4])
    p.add_argument("--recipe-images", type=int, default=50_000, help="training images per recipe epoch")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out of --recipes")
    p.add_argument("--no-loader", action="store_true", help="skip the GPU-resident vs DataLoader comparison")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    bs = 128
    cifar = cifar_shaped(args.resnet_steps * bs, 256, device)
    digits = load_dataset("digits").to(device)
    resnet = lambda: build_model("resnet20", (3, 32, 32), 10, seed=0)  # noqa: E731
    mlp = lambda: build_model("mlp", digits.input_shape, 10, hidden=128, depth=2, seed=0)  # noqa: E731
    cases = [Case("resnet20-x1", resnet, cifar, bs, args.resnet_epochs),
             Case("mlp-digits", mlp, digits, 64, args.mlp_epochs)]
    if not args.no_masked:
        cases += [Case("resnet20-x1-masked", resnet, cifar, bs, args.resnet_epochs, sparsity=0.9),
                  Case("mlp-digits-masked", mlp, digits, 64, args.mlp_epochs, sparsity=0.9)]

    if args.only:
        cases = [c for c in cases if c.name in args.only]
    print(f"torch {torch.__version__}, device {device}, {args.threads} threads, median of {args.repeats}")
    rows = compare(cases, device, args.repeats)
    print("\n| case | device | train() samples/s | bare loop samples/s | ratio |\n|---|---|---|---|---|")
    for name, ours, bare in rows:
        print(f"| {name} | {device} | {ours:,.0f} | {bare:,.0f} | {ours / bare:.3f} |")

    if args.recipes:
        print(f"\nrecipes, {device}: samples/s of train() over {args.recipe_images:,} images, batch {bs}")
        recipe_rows = recipe_matrix(device, args.recipe_widths, args.recipe_images, bs, not args.no_compile)
        print("\n| case | device | samples/s |\n|---|---|---|")
        for name, rate in recipe_rows:
            print(f"| {name} | {device} | {rate:,.0f} |")
    if args.no_loader:
        pass
    elif device.type == "cuda":
        loader_comparison(device, 50_000, bs, args.workers)
    elif args.loader_check:
        loader_comparison(device, 2_048, bs, [0, 2])
    if args.profile:
        profile_train(cases[0], device)


if __name__ == "__main__":
    main()
