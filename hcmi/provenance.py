"""What made a result: code, parameters, data, environment, runtime. Written into every metrics.json and model.pt.

    code         git commit of the working tree and whether it was dirty (None outside a git checkout), the sha256 of
                 the package's source, and the sha256 of the step's own code (the import closure of its module)
    params       the keys the step declares, their values, and the sha256 of those values
    data         a fingerprint (sha256) of every input the caller names: manifests, annotation tables, frame caches
    environment  Python and library versions, CUDA/cuDNN when present, the platform and CPU, and what decided the CPU
                 kernels (compute.numerics, the pinned settings, torch's kernel level in use, the CPU's flags, MKL's
                 and oneDNN's versions: hcmi/numerics.py)
    runtime      device, threads, deterministic algorithms, CPUs available, wall time, when and where it ran
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

from hcmi import codebase, numerics
from hcmi.files import sha256sum

LIBRARIES = ("torch", "open_clip_torch", "decord", "numpy", "scipy", "pandas", "av", "faiss-cpu")


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def code_version(module: str) -> dict:
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "git_commit": commit,
        "git_dirty": bool(status) if commit else None,
        "package_sha256": package_hash(),
        "step_module": module,
        "step_code_sha256": codebase.code_hash(module),
    }


def package_hash() -> str:
    """sha256 over every source and data file of the installed package."""
    digest = hashlib.sha256()
    root = codebase.PACKAGE_DIR
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in {".py", ".json", ".yaml", ".ipynb"}
                       and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def params_record(keys: list[str], values: dict) -> dict:
    payload = json.dumps(values, sort_keys=True, default=str)
    return {"keys": list(keys), "values": values, "sha256": hashlib.sha256(payload.encode()).hexdigest()}


def file_fingerprint(path: Path) -> str | None:
    path = Path(path)
    return sha256sum(path) if path.is_file() else None


def environment(kernels: str | None = None) -> dict:
    """kernels: the compute.numerics of the result (None for steps that run no model). A process without torch
    (a summary: no number of it comes from torch) records no CUDA and no torch kernels, and is not made to import it."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    info = {"python": platform.python_version(), "libraries": versions, "platform": platform.platform(),
            "cpu": numerics.cpu_model(), "numerics": numerics.record(kernels)}
    if kernels is None and "torch" not in sys.modules:
        return info
    import torch

    info.update(cuda=torch.version.cuda if torch.cuda.is_available() else None,
                cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def runtime_record(runtime, started: float) -> dict:
    """runtime: a hcmi.runtime.Runtime (or None for steps that run no model)."""
    record = {"wall_time_s": round(time.time() - started, 3),
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "host": socket.gethostname(),
              "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    if runtime is not None:
        record.update(device=str(runtime.device), threads=runtime.threads, deterministic=runtime.deterministic)
    return record


def collect(*, module: str, params: dict, data: dict, runtime, started: float) -> dict:
    """The provenance block of one result. params: {"keys": [...], "values": {...}} (params_record)."""
    return {"code": code_version(module), "params": params, "data": data,
            "environment": environment(getattr(runtime, "numerics", None)),
            "runtime": runtime_record(runtime, started)}
