#!/usr/bin/env python
"""Wall time of weight matching and activation matching for the paper's architectures.

For each model, A and B are two independent random initializations (seeds 0 and 1) in eval mode;
activation matching sees random inputs of the model's input shape (CIFAR-shaped 3x32x32 for
ResNet20, 3x224x224 for ResNet50). Each timing is the median of ``--repeats`` runs. Prints a
markdown table, with the torch thread count and the machine's load average (other processes
competing for the cores make every number slower; compare runs made under similar load).

Defaults keep the whole run to a few minutes on a 2-core CPU; ResNet20 x16's forward passes cost
~10 GFLOP per image, so it sees fewer inputs by default (each default can be overridden).

Examples:
    python benchmarks/bench_matching.py
    python benchmarks/bench_matching.py --models resnet50 --methods weight --repeats 5
    python benchmarks/bench_matching.py --batches 20 --batch-size 256 --threads 1
    python benchmarks/bench_matching.py --quiet-wait 120   # on a machine shared with other jobs

On a shared machine, torch's OpenMP threads spin while waiting for each other; when another
process holds a core this can make multi-threaded timings many times slower. The last column says
how busy other processes kept the CPU; OMP_WAIT_POLICY=PASSIVE softens the effect.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass

import torch

from ticketalign.models import build_model, permutation_spec
from ticketalign.permutation.activation_matching import activation_matching
from ticketalign.permutation.weight_matching import weight_matching


@dataclass(frozen=True)
class Case:
    model: str
    width: float
    input_shape: tuple[int, ...]
    num_classes: int
    batches: int  # default number of activation-matching batches
    batch_size: int


CASES = {
    "resnet20x1": Case("resnet20", 1, (3, 32, 32), 10, 10, 128),
    "resnet20x4": Case("resnet20", 4, (3, 32, 32), 10, 10, 128),
    "resnet20x16": Case("resnet20", 16, (3, 32, 32), 10, 2, 32),
    "resnet50": Case("resnet50", 1, (3, 224, 224), 1000, 4, 32),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=sorted(CASES), default=list(CASES), help="models to time")
    p.add_argument("--methods", nargs="+", choices=["weight", "activation"], default=["weight", "activation"])
    p.add_argument("--repeats", type=int, default=3, help="runs per timing (the median is reported)")
    p.add_argument("--batches", type=int, default=None, help="activation batches for ResNet20 (default: per model)")
    p.add_argument("--batch-size", type=int, default=None, help="activation batch size for ResNet20")
    p.add_argument("--r50-batches", type=int, default=None, help="activation batches for ResNet50 (default 4)")
    p.add_argument("--r50-batch-size", type=int, default=None, help="activation batch size for ResNet50 (default 32)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each timed run, wait up to this many seconds for other processes to go idle",
    )
    p.add_argument("--forward-baseline", action="store_true", help="also time the two models' forward passes alone")
    args = p.parse_args()
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Timer:
    """Median wall time of repeated runs, and how many cores *other* processes kept busy meanwhile
    (they slow every timing down; ``quiet_wait`` seconds are spent waiting for them to go idle)."""

    def __init__(self, repeats: int, quiet_wait: float) -> None:
        self.repeats, self.quiet_wait = repeats, quiet_wait
        self.foreign = 0.0  # the most cores other processes used during a timed run

    def foreign_cores(self, seconds: float) -> float | None:
        busy, own = _busy_cpu_seconds(), _own_cpu_seconds()
        time.sleep(seconds)
        if busy is None:
            return None
        return max(0.0, (_busy_cpu_seconds() - busy) - (_own_cpu_seconds() - own)) / seconds

    def wait_for_quiet(self) -> None:
        deadline = time.monotonic() + self.quiet_wait
        while time.monotonic() < deadline:
            load = self.foreign_cores(1.0)
            if load is None or load < 0.05:
                return

    def median(self, fn) -> tuple[float, object]:
        times, result = [], None
        for _ in range(self.repeats):
            if self.quiet_wait > 0:
                self.wait_for_quiet()
            busy, own = _busy_cpu_seconds(), _own_cpu_seconds()
            start = time.perf_counter()
            result = fn()
            wall = time.perf_counter() - start
            times.append(wall)
            if busy is not None:
                foreign = (_busy_cpu_seconds() - busy) - (_own_cpu_seconds() - own)
                self.foreign = max(self.foreign, foreign / wall)
        return statistics.median(times), result


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def forward_passes(a: torch.nn.Module, b: torch.nn.Module, xs: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for x in xs:
            a(x)
            b(x)


def bench(key: str, args: argparse.Namespace) -> list[str]:
    """One table row: the model's size, then its timings."""
    case = CASES[key]
    timer = Timer(args.repeats, args.quiet_wait)
    a = build_model(case.model, case.input_shape, case.num_classes, width=case.width, seed=0).eval()
    b = build_model(case.model, case.input_shape, case.num_classes, width=case.width, seed=1).eval()
    spec = permutation_spec(a)
    n_params = sum(p.numel() for p in a.parameters())
    row = [key, f"{n_params / 1e6:.2f} M", f"{len(spec.group_sizes)} ({max(spec.group_sizes.values())})"]
    if "weight" in args.methods:
        pa = {n: p.detach() for n, p in a.named_parameters()}
        pb = {n: p.detach() for n, p in b.named_parameters()}
        seconds, (_, history) = timer.median(functools.partial(weight_matching, spec, pa, pb))
        row += [f"{seconds:.2f}", str(len(history) - 1)]
    else:
        row += ["-", "-"]
    forward = "-"
    if "activation" in args.methods:
        r50 = case.model == "resnet50"
        n_batches = (args.r50_batches if r50 else args.batches) or case.batches
        size = (args.r50_batch_size if r50 else args.batch_size) or case.batch_size
        g = torch.Generator().manual_seed(0)
        xs = [torch.randn(size, *case.input_shape, generator=g) for _ in range(n_batches)]
        seconds, _ = timer.median(functools.partial(activation_matching, spec, a, b, xs))
        row += [f"{seconds:.2f}", f"{n_batches} x {size} x {'x'.join(map(str, case.input_shape))}"]
        if args.forward_baseline:
            forward = f"{timer.median(functools.partial(forward_passes, a, b, xs))[0]:.2f}"
    else:
        row += ["-", "-"]
    if args.forward_baseline:
        row.append(forward)
    row.append(f"{timer.foreign:.2f}")
    return row


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs ({cpu_name()})")
    print(f"load average before: {load_before[0]:.2f}; median of {args.repeats} runs per timing")
    print(
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; last column: the most cores other "
        "processes kept busy during a timed run of that row (0 = the timings had the machine alone)\n"
    )
    columns = ["model", "parameters", "groups (largest)", "weight matching [s]", "sweeps"]
    columns += ["activation matching [s]", "inputs"]
    if args.forward_baseline:
        columns.append("2 forward passes alone [s]")
    columns.append("other processes [cores]")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for key in args.models:
        print("| " + " | ".join(bench(key, args)) + " |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
