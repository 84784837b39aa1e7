#!/usr/bin/env python
"""What a config costs on a cluster, and the figures to correct workflow/job_costs.tsv with.

Without --calibrate: builds the workflow's jobs (a dry run, nothing runs or is submitted) and
prints, per rule, the jobs, the request of each (the sbatch flags it turns into) and the total
GPU-hours requested (every submission a job needs at runtime.max_job_hours; no failures) and
expected (the table's estimate, without the safety factor). Run from the repository root:

    python workflow/scripts/cluster_cost.py --configfile presets/cifar10_resnet20.yaml

With --calibrate: reads results/<name>/benchmarks/<rule>/*.tsv of a finished run and prints, per
training rule, the seconds per epoch and the memory the jobs measured, to put into job_costs.tsv.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from ticketalign.cluster import STARTUP_S, CostModel, load_cost_table
from ticketalign.config import load_config_files, load_schema, validate_config

ROOT = Path(__file__).resolve().parents[2]

JOB = re.compile(r"^rule (\w+):$")
FIELD = re.compile(r"^\s+(wildcards|resources): (.*)$")
RULE_DIRS = {"train_dense": "dense", "imp": "imp", "train_sparse": "sparse", "match": "match"}


def jobs(configfile: str) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(rule, wildcards, resources) of every job of a dry run with the slurm profile."""
    with tempfile.TemporaryDirectory() as work:  # a dry run still writes .snakemake/: not into the checkout
        out = subprocess.run(
            ["snakemake", "-n", "-F", "--workflow-profile", str(ROOT / "workflow/profiles/slurm"), "-s",
             str(ROOT / "Snakefile"), "--configfile", str(Path(configfile).resolve()), "-d", work],
            capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"the dry run failed:\n{out.stderr[-3000:]}")
    found, current = [], None
    for line in out.stdout.splitlines() + out.stderr.splitlines():
        if m := JOB.match(line):
            current = (m.group(1), {}, {})
            found.append(current)
        elif current and (m := FIELD.match(line)):
            pairs = dict(kv.split("=", 1) for kv in m.group(2).split(", ") if "=" in kv)
            current[1 if m.group(1) == "wildcards" else 2].update(pairs)
    return [job for job in found if job[0] != "all"]



def local_rules() -> set[str]:
    """The rules named by `localrules:` in workflow/rules/cluster.smk (a dry run does not say)."""
    text = (ROOT / "workflow/rules/cluster.smk").read_text()
    block = re.search(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", text, re.M)
    return set(re.findall(r"\w+", block.group(1))) if block else set()


def report(configfile: str) -> None:
    config = _config(configfile)
    model = CostModel(config, load_cost_table(ROOT / "workflow/job_costs.tsv"))
    by_rule = defaultdict(list)
    for rule, wildcards, resources in jobs(configfile):
        by_rule[rule].append((wildcards, resources))
    total_req = total_exp = 0.0
    print(f"{config['name']}: {sum(map(len, by_rule.values()))} jobs, cap runtime.max_job_hours = "
          f"{config['runtime']['max_job_hours']:g} h")
    local = local_rules()
    for rule, rows in by_rule.items():
        gpu = [(wc, r) for wc, r in rows if r.get("gpu", "0") != "0"]
        # a job longer than runtime.max_job_hours asks again for each further submission
        req = sum(int(r["runtime"]) * model.submissions(rule, wc) for wc, r in gpu) / 60
        exp = sum(model.expected_seconds(rule, wc) for wc, _ in gpu) / 3600
        total_req, total_exp = total_req + req, total_exp + exp
        def span(key, rows=rows):
            values = sorted({int(r[key]) for _, r in rows})
            return f"{values[0]}" + (f"..{values[-1]}" if len(values) > 1 else "")

        flags = f"-t {span('runtime')} --mem {span('mem_mb')} --cpus-per-task={span('cpus_per_task')}"
        flags += " --gpus=1" if gpu else ""
        if rule in local:
            flags = "none: a local rule, run by Snakemake itself"
        elif rule == "match" and gpu:
            flags += " (activation matching only)"
        print(f"  {rule:13s} {len(rows):4d} jobs  sbatch {flags}  GPU-hours requested {req:9.1f}, "
              f"expected {exp:8.1f}")
    print(f"  {'total':13s} GPU-hours requested {total_req:.1f}, expected {total_exp:.1f}")


def calibrate(configfile: str) -> None:
    config = _config(configfile)
    model = CostModel(config, load_cost_table(ROOT / "workflow/job_costs.tsv"))
    bench = Path("results") / config["name"] / "benchmarks"
    for rule, folder in RULE_DIRS.items():
        per_epoch, gross, rss = [], [], []
        for tsv in sorted((bench / folder).glob("*.tsv")):
            wc = _wildcards(rule, tsv.stem)
            epochs = model.epochs(rule, wc)
            row = tsv.read_text().splitlines()[-1].split("\t")
            if epochs:
                per_epoch.append(max(float(row[0]) - STARTUP_S, 0) / epochs)
                gross.append(float(row[0]) / epochs)
                rss.append(float(row[2]))
        if per_epoch:
            print(f"{rule:13s} {len(per_epoch)} jobs: epoch_s {max(per_epoch):.3g} (largest; start-up of "
                  f"{STARTUP_S:.0f} s off), {max(gross):.3g} with it; mem_mb {max(rss):.0f} (max_rss)")
    print("Rows with several widths: run this on one width at a time and fit epoch_s + epoch_s_per_width2 x width^2.")


def _wildcards(rule: str, stem: str) -> dict[str, str]:
    """A benchmark file's wildcards from its name (workflow/rules/*.smk: w<width>_seed<s>_s<sp>, ...)."""
    wc = {"width": re.search(r"w([0-9.]+)", stem).group(1)}
    if m := re.search(r"_s([0-9.]+)", stem):
        wc["sp"] = m.group(1)
    if m := re.search(r"_k(\d+)", stem):
        wc["k"] = m.group(1)
    if rule == "match":
        wc["method"] = stem.rsplit("_", 1)[1]
    return wc


def _config(configfile: str) -> dict:
    # sized on a login node, run on GPU nodes: a CUDA runtime.device need not exist here
    return validate_config(load_config_files([configfile]), load_schema(ROOT / "workflow/schemas/config.schema.yaml"),
                           jobs_run_here=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", default=str(ROOT / "config.yaml"), help="the config (a preset)")
    p.add_argument("--calibrate", action="store_true", help="per-epoch figures from results/<name>/benchmarks")
    args = p.parse_args()
    (calibrate if args.calibrate else report)(args.configfile)


if __name__ == "__main__":
    main()
