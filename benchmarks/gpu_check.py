#!/usr/bin/env python
"""The device check: one command that exercises the CUDA path end to end and prints one table.

On a machine with CUDA (about 6-8 minutes on one H100/H200, no download):
  1. env        torch / CUDA / GPU, bf16 support
  2. tests      the default test suite with CUDA visible (the CUDA-only tests run instead of skipping)
  3. workflow   the real Snakefile on a small learnable CIFAR-shaped dataset written here
                (ResNet20, both matchers, lth/naive/permuted), `--resources gpu=1`
  4. train      bench_train.py on the GPU: train() vs a bare loop, fp32 vs bf16, eager vs
                torch.compile for ResNet20 x1 and x4, GPU-resident data vs a DataLoader
  5. jobs       bench_jobs_per_gpu.py: total samples/s of 1, 2, 4 concurrent ResNet20 x1 jobs
                (each job claims a jobs_per_gpu slot of the GPU through ticketalign.gpu)
  6. imagenet   bench_imagenet_input.py: images/s of ImageNet input, JPEGs decoded on the GPU
                vs PIL in DataLoader workers (2,048 ImageNet-sized JPEGs written here)
Correctness first: if the time runs out, the benchmarks are what is lost.
Without CUDA it runs a reduced version of each step on the CPU and says what it skipped, so the
script itself stays tested.

  python benchmarks/gpu_check.py                  # logs and the table under ./gpu_check_out
  python benchmarks/gpu_check.py --out DIR --skip tests
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("env", "tests", "workflow", "train", "jobs", "imagenet")


def run_step(name: str, cmd: list[str], out: Path, timeout: int, cwd: Path = ROOT,
             env: dict[str, str] | None = None) -> tuple[str, float, str]:
    """Run one step, tee its output to ``out/<name>.log``; (status, seconds, output)."""
    print(f"\n=== {name}: {' '.join(cmd)}  (limit {timeout} s)", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        text, status = proc.stdout + proc.stderr, "ok" if proc.returncode == 0 else f"FAILED rc={proc.returncode}"
    except subprocess.TimeoutExpired as err:
        text = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        status = f"TIMEOUT after {timeout} s"
    seconds = time.perf_counter() - t0
    (out / f"{name}.log").write_text(text)
    print(text[-6000:], flush=True)
    return status, seconds, text


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def write_learnable_cifar(root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """CIFAR-10's on-disk format (python pickles), with images a network can learn: each class
    is a fixed random colour pattern at low resolution, plus per-image noise and a random shift."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(40, 215, size=(10, 3, 8, 8))
    patterns = patterns.repeat(4, axis=2).repeat(4, axis=3)  # 32x32, blocky

    def make(n: int) -> tuple[np.ndarray, list[int]]:
        y = rng.integers(0, 10, n)
        x = patterns[y] + rng.normal(0, 40, size=(n, 3, 32, 32))
        shifts = rng.integers(-3, 4, size=(n, 2))
        x = np.stack([np.roll(img, tuple(s), axis=(1, 2)) for img, s in zip(x, shifts)])
        return np.clip(x, 0, 255).astype(np.uint8), [int(v) for v in y]

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    per_batch = n_train // 5
    for i in range(1, 6):
        x, y = make(per_batch)
        batch = {b"batch_label": b"train", b"data": x.reshape(len(x), -1), b"labels": y}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    x, y = make(n_test)
    (folder / "test_batch").write_bytes(pickle.dumps({b"batch_label": b"test", b"data": x.reshape(n_test, -1),
                                                      b"labels": y}, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))


def workflow_config(data_root: Path, cuda: bool) -> dict:
    import yaml  # noqa: F401  (checked importable before the step runs)

    return {
        "name": "gpu_check",
        "dataset": {"name": "cifar10", "root": str(data_root)},
        "model": {"name": "resnet20", "widths": [1]},
        "seed_pairs": [[0, 100]],
        "dense": {"epochs": 4 if cuda else 2, "lr": 0.05, "batch_size": 128},
        "imp": {"train": {"epochs": 1, "lr": 0.01, "batch_size": 128}},
        "sparsities": [0.8 if cuda else 0.5],
        "rewind_epochs": [0, 1],
        "matching": {"methods": ["weight", "activation"], "activation": {"batches": 4, "batch_size": 256}},
        "sparse": {"variants": ["lth", "naive", "permuted"],
                   "train": {"epochs": 4 if cuda else 2, "lr": 0.05, "batch_size": 128}},
        "runtime": {"device": "auto", "amp": cuda, "channels_last": cuda},  # the presets' GPU recipe
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"),
                   help="folder for the step logs and table.md (default $OUT or ./gpu_check_out)")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for the workflow run (default <out>/workflow_run)")
    p.add_argument("--skip", nargs="+", default=[], choices=STEPS, help="steps to leave out")
    p.add_argument("--cpu", action="store_true", help="the reduced CPU mode even where CUDA is present")
    args = p.parse_args()

    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    args.out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    rows: list[tuple[str, str, float, str]] = []  # step, status, seconds, key figures
    tables: list[tuple[str, list[str]]] = []
    skipped = [f"{s}: --skip" for s in args.skip]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    if "env" not in args.skip:
        if cuda:
            props = torch.cuda.get_device_properties(0)
            figures = (f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x "
                       f"{props.name} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}), "
                       f"bf16 {torch.cuda.is_bf16_supported()}")
        else:
            figures = f"torch {torch.__version__}, no CUDA: reduced CPU mode"
        print(figures)
        rows.append(("env", "ok", 0.0, figures))

    if "tests" not in args.skip:
        cmd = [py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
        if cuda and importlib.util.find_spec("xdist"):
            cmd += ["-n", str(min(8, os.cpu_count() or 1))]
        if not cuda:
            cmd += ["tests/test_gpu.py"]
            skipped.append("tests: only the GPU slot tests (the CUDA-only tests need a GPU)")
        status, sec, text = run_step("tests", cmd, args.out, timeout=240, env=env)
        summary = next((line.strip("= ") for line in reversed(text.splitlines()) if " passed" in line or
                        " failed" in line), "no summary line")
        rows.append(("tests", status, sec, summary))

    if "workflow" not in args.skip:
        import yaml

        work = args.work or args.out / "workflow_run"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        write_learnable_cifar(work / "data", 10_000 if cuda else 256, 2_000 if cuda else 64)
        (work / "config.yaml").write_text(yaml.safe_dump(workflow_config(work / "data", cuda), sort_keys=False))
        cmd = ["snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile",
               str(work / "config.yaml"), "--cores", str(min(8, os.cpu_count() or 1)), "-q"]
        if cuda:
            cmd += ["--resources", "gpu=1"]
        else:
            skipped.append("workflow: CPU, 256 images, 2 epochs dense and sparse, sparsity 50%")
        status, sec, text = run_step("workflow", cmd, args.out, timeout=240, cwd=work, env=env)
        table = work / "results" / "gpu_check" / "table.md"
        logs = list((work / "results" / "gpu_check" / "logs").rglob("*.log")) if table.exists() else []
        on_cuda = sum("cuda" in log.read_text() for log in logs)
        if table.exists():
            tables.append(("workflow", table.read_text().splitlines()))
            shutil.copy(table, args.out / "workflow_table.md")
        rows.append(("workflow", status, sec, f"{len(logs)} job logs, {on_cuda} mention cuda"))
        shutil.rmtree(work / "data", ignore_errors=True)

    if "train" not in args.skip:
        cmd = [py, "benchmarks/bench_train.py", "--repeats", "1", "--recipes"]
        if cuda:
            # a whole number of batches per epoch: torch.compile then traces one batch shape only
            cmd += ["--device", "cuda", "--only", "resnet20-x1", "resnet20-x1-masked", "--workers", "4", "8",
                    "--recipe-images", "25600"]
        else:
            cmd += ["--device", "cpu", "--only", "mlp-digits", "--mlp-epochs", "3", "--recipe-widths", "1",
                    "--recipe-images", "256", "--no-compile", "--no-loader"]
            skipped.append("train: CPU, digits MLP 3 epochs, ResNet20 x1 on 256 images, no torch.compile, "
                           "no DataLoader comparison")
        status, sec, text = run_step("train", cmd, args.out, timeout=220, env=env)
        tables.append(("train", table_lines(text) + [line for line in text.splitlines() if " s   (" in line]))
        rows.append(("train", status, sec, "see table"))

    if "jobs" not in args.skip:
        cmd = [py, "benchmarks/bench_jobs_per_gpu.py"]
        if cuda:
            cmd += ["--device", "cuda", "--jobs", "1", "2", "4", "--images", "20000", "--epochs", "2",
                    "--startup-seconds", "25"]
        else:
            cmd += ["--device", "cpu", "--jobs", "1", "2", "--images", "256", "--epochs", "1",
                    "--startup-seconds", "15", "--amp", "0"]
            skipped.append("jobs: CPU, 1-2 jobs of 256 images (checks the benchmark runs, not a GPU figure)")
        status, sec, text = run_step("jobs", cmd, args.out, timeout=150, env=env)
        tables.append(("jobs", table_lines(text)))
        rows.append(("jobs", status, sec, "see table"))

    if "imagenet" not in args.skip:
        cmd = [py, "benchmarks/bench_imagenet_input.py"]
        if cuda:
            cmd += ["--device", "cuda", "--images", "2048", "--workers", "4", "8", "16", "--epochs", "2"]
        else:
            cmd += ["--device", "cpu", "--images", "64", "--workers", "2", "--read-workers", "1", "--batch-size",
                    "32", "--epochs", "1"]
            skipped.append("imagenet: CPU, 64 JPEGs, decode on the CPU (checks the benchmark runs, not a GPU figure)")
        status, sec, text = run_step("imagenet", cmd, args.out, timeout=150, env=env)
        tables.append(("imagenet", table_lines(text)))
        rows.append(("imagenet", status, sec, "see table"))

    lines = ["| step | status | seconds | figures |", "|---|---|---|---|"]
    lines += [f"| {s} | {st} | {sec:.0f} | {fig} |" for s, st, sec, fig in rows]
    for name, tab in tables:
        lines += ["", f"{name}:", *tab]
    if skipped:
        lines += ["", "skipped or reduced:", *[f"- {s}" for s in skipped]]
    text = "\n".join(lines)
    (args.out / "table.md").write_text(text + "\n")
    print("\n" + "=" * 30 + " gpu_check summary " + "=" * 30 + "\n" + text)
    if any(st != "ok" for _, st, _, _ in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
