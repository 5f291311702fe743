"""Shared helpers of the benchmark scripts: timing, machine description, results as JSON and a table."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

OUT_DIR = Path(os.environ.get("HCMI_BENCH_DIR", "data/bench"))


def best_time(fn, repeat: int = 3, warmup: int = 1) -> float:
    """The fastest of `repeat` timed calls (seconds), after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sync(device) -> None:
    """Wait for queued GPU work, so that a timer read afterwards covers it (no-op on CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def pick_device(name: str):
    """hcmi's own device resolution ('auto' -> cuda when available; 'cuda' without a GPU stops the benchmark)."""
    from hcmi.runtime import DeviceError, resolve_device

    try:
        return resolve_device(name)
    except DeviceError as error:
        raise SystemExit(f"--device {name}: {error}") from None


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or
            platform.machine(), "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
            os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def save(name: str, payload: dict) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    tmp.replace(path)
    return path


def table(rows: list[dict], columns: list[str]) -> str:
    """A small fixed-width text table."""
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
