"""What decides whether a run reproduces bit for bit: recorded in every run's metrics.json.

Runs are deterministic for a given machine and software, but float rounding depends on the
kernels torch picks, and those depend on the torch version, the CPU's vector instruction set
(``torch.backends.cpu.get_cpu_capability()``: e.g. AVX2 vs AVX512), the device and the number
of threads. Two runs that agree on all of these give identical numbers; runs that differ in any
may differ in the last digits, and after many SGD steps by up to about the seed-to-seed spread.
"""

from __future__ import annotations

import platform
from typing import Any

import torch


def environment(device: torch.device | str) -> dict[str, Any]:
    """The software and hardware a run computed with (see the module docstring for why)."""
    device = torch.device(device)
    name = str(device)
    if device.type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda})"
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": name,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
