"""Where and how a step computes: device, CPU threads, deterministic algorithms, seeds. The one place for each.

The same step with the same parameters must give the same bits however it is launched (Snakemake, DVC, by hand):
floating-point sums depend on the number of threads, so the thread count is a parameter (compute.train_threads),
applied here on every path and recorded in every result, never taken from the launcher's environment.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from hcmi.errors import HcmiError

# cuBLAS needs a fixed workspace to be deterministic (CUDA's documented requirement)
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


class DeviceError(HcmiError, RuntimeError):
    """The requested device is not available."""


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    threads: int
    deterministic: bool


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("compute.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def configure(device: str, threads: int, deterministic: bool) -> Runtime:
    """Apply the compute parameters to this process (call once, before any tensor work)."""
    resolved = resolve_device(device)
    torch.set_num_threads(threads)
    if deterministic:
        if resolved.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    return Runtime(resolved, threads, deterministic)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
