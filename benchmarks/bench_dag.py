#!/usr/bin/env python
"""Wall time of building each preset's DAG (``snakemake -n --forceall``), i.e. the start-up cost
before the first job: config validation, the rules, and the job graph (483 jobs for CIFAR-10
ResNet20). Each timing is the median of ``--repeats`` runs; prints a markdown table with the
machine's load average (other processes on the cores make every number slower).

Examples:
    python benchmarks/bench_dag.py
    python benchmarks/bench_dag.py --presets cifar10_resnet20 --profile slurm --repeats 5
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def time_dry_run(preset: Path, profile: str) -> tuple[float, int]:
    """Seconds for one dry run of the whole DAG, and its number of jobs."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--forceall", "--quiet", "rules",
           "--workflow-profile", f"workflow/profiles/{profile}", "--configfile", str(preset)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{preset.name}: snakemake -n failed:\n{proc.stderr[-3000:]}")
    total = re.search(r"^total\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M)
    return elapsed, int(total.group(1)) if total else -1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="*", default=None, help="preset names (default: every file in presets/)")
    p.add_argument("--profile", default="default", choices=["default", "slurm"], help="workflow profile")
    p.add_argument("--repeats", type=int, default=3, help="runs per preset (median reported)")
    args = p.parse_args()

    names = args.presets or sorted(f.stem for f in (ROOT / "presets").glob("*.yaml"))
    print(f"| preset | jobs | median s ({args.repeats} runs, profile {args.profile}) | load avg (1 min) |")
    print("|---|---|---|---|")
    for name in names:
        runs = [time_dry_run(ROOT / "presets" / f"{name}.yaml", args.profile) for _ in range(args.repeats)]
        median = statistics.median(t for t, _ in runs)
        print(f"| {name} | {runs[0][1]} | {median:.1f} | {os.getloadavg()[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
