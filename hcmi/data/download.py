"""Getting a dataset's raw files into data/raw/<dataset>/: generated (synthetic) or downloaded, then recorded in a
manifest (every file with its size and sha256) that is written last, so its presence means the step finished."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from hcmi.files import write_json

log = logging.getLogger(__name__)


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(raw_dir: Path, dataset: str, fingerprint: str) -> dict:
    raw_dir = Path(raw_dir)
    files = {}
    for sub in ("source", "videos"):
        for path in sorted((raw_dir / sub).rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                files[str(path.relative_to(raw_dir))] = {"size": path.stat().st_size, "sha256": sha256sum(path)}
    manifest = {"dataset": dataset, "fingerprint": fingerprint, "files": files}
    write_json(raw_dir / "manifest.json", manifest)
    return manifest


def fetch(dataset: str, params, raw_dir: Path, workers: int = 1) -> dict:
    """Make data/raw/<dataset>/ complete; returns the manifest."""
    from dataclasses import asdict

    from hcmi.config import fingerprint
    from hcmi.data import datasets

    spec = datasets.get(dataset)
    if spec.generated:
        from hcmi.data import synthetic

        source = params.synthetic()
        synthetic.generate(source, raw_dir, workers=workers)
        return write_manifest(raw_dir, dataset, fingerprint(asdict(source), synthetic.GENERATOR_VERSION))
    raise NotImplementedError(f"downloading {dataset} is not implemented yet")
