"""What every step shares: loading the parameters (validated against the dataset registry too), the worker count of
the steps whose results do not depend on it, and fingerprints of input files for provenance."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from hcmi import config
from hcmi.data.datasets import DATASETS
from hcmi.files import sha256sum

VAL_COLUMNS = ["step", "epoch", "R1", "R5", "R10", "MdR"]  # val_log.csv


def load_params(files: Iterable[str] | None = None, settings: Iterable[str] = ()) -> config.Params:
    return config.load(files, settings, known_datasets=DATASETS)


def validate_params(raw: dict, source: str) -> dict:
    """The parameters as declared (hcmi/parameters.py), checked against the dataset registry too."""
    return config.validate(raw, source, known_datasets=DATASETS)


def scheduled_workers() -> int:
    """Parallel workers for steps whose results do not depend on them (decoding, downloads): the threads the
    scheduler granted (OMP_NUM_THREADS, set by Snakemake from the rule's threads), at most the CPUs available."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    granted = os.environ.get("OMP_NUM_THREADS")
    return max(1, min(int(granted), available)) if granted and granted.isdigit() else available


def fingerprints(paths: dict[str, Path]) -> dict[str, str | None]:
    """sha256 of each named input file; for a folder (a frame cache), of its metadata files (index, shard metadata,
    skip list) and the sizes of its other files, so a cache of hundreds of gigabytes is fingerprinted in seconds."""
    out = {}
    for name, path in paths.items():
        path = Path(path)
        if path.is_file():
            out[name] = sha256sum(path)
        elif path.is_dir():
            out[name] = _folder_fingerprint(path)
        else:
            out[name] = None
    return out


def _folder_fingerprint(folder: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        small = path.suffix in {".json", ".parquet", ".csv"}
        summary = sha256sum(path) if small else str(path.stat().st_size)
        digest.update(f"{path.relative_to(folder)}\0{summary}\0".encode())
    return digest.hexdigest()
