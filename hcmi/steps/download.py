"""`hcmi download --dataset D` (and `hcmi synth`): a dataset's raw files into data/raw/<dataset>/ — downloaded,
placed by hand, or (the synthetic benchmark) generated — recorded in manifest.json."""

from __future__ import annotations

import logging

from hcmi.data import datasets
from hcmi.data.download import fetch
from hcmi.steps.common import scheduled_workers

log = logging.getLogger(__name__)


def run(params, layout, dataset: str) -> dict:
    source = params.synthetic(dataset) if datasets.get(dataset).generated else params.dataset(dataset).source.to_dict()
    manifest = fetch(dataset, source, layout.raw(dataset), workers=scheduled_workers())
    log.info("%s: %d files recorded in %s", dataset, len(manifest["files"]), layout.manifest(dataset))
    return manifest
