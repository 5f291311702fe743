"""Where and how a step computes: device, CPU threads, CPU kernels, deterministic algorithms, seeds. The one place for
each.

The same step with the same parameters must give the same bits however it is launched (Snakemake, DVC, by hand) and on
whichever machine of the pinned kernel level it runs: floating-point sums depend on the number of threads and on the
vector kernels, so both are parameters (compute.train_threads, compute.numerics: hcmi/numerics.py), applied here on
every path and recorded in every result, never taken from the launcher's environment.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from hcmi import numerics
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
    numerics: str


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("compute.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def configure(device: str, threads: int, deterministic: bool, kernels: str) -> Runtime:
    """Apply the compute parameters to this process (call once, before any tensor work). `kernels` is
    compute.numerics: the command line pins it at start; here it is pinned for callers of the steps' functions, and
    an error when torch already computes with other kernels."""
    numerics.pin(kernels)
    resolved = resolve_device(device)
    torch.set_num_threads(threads)
    if deterministic:
        if resolved.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    return Runtime(resolved, threads, deterministic, kernels)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
