"""Running the real Snakefile from a test: ``snakemake(workdir, *args)`` with ``workdir/config.yaml``
as the config, and ``job_counts`` to read a (dry) run's job table. Shared by test_workflow and
test_faults."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def snakemake_command(workdir: Path, *args: str, snakefile: Path = ROOT / "Snakefile") -> list[str]:
    if shutil.which("snakemake") is None:
        pytest.fail("snakemake is not installed: pip install -e '.[test]'")
    config = ["--configfile", str(workdir / "config.yaml")] if (workdir / "config.yaml").exists() else []
    return ["snakemake", "-s", str(snakefile), "-d", str(workdir), *config, *args]


def snakemake(workdir: Path, *args: str, snakefile: Path = ROOT / "Snakefile") -> subprocess.CompletedProcess:
    """Run snakemake on ``workdir`` (its config.yaml, if any, as ``--configfile``) and return the finished process."""
    cmd = snakemake_command(workdir, *args, snakefile=snakefile)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def job_counts(text: str) -> dict[str, int]:
    """The job table of a (dry) run's output: rule -> number of jobs."""
    counts, inside = {}, False
    for line in text.splitlines():
        if line.startswith("job ") and "count" in line:
            inside = True
            continue
        if inside:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
    return counts
