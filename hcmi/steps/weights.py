"""`hcmi weights`: make every configured backbone's weights local (an open_clip tag is fetched once into
data/weights/files/, network needed once) and record in data/weights/backbone.json what training will load."""

from __future__ import annotations

import logging

from hcmi import weights
from hcmi.files import write_json

log = logging.getLogger(__name__)


def backbones_in_use(params) -> list[dict]:
    """Every distinct backbone that the configured variants (trained or zero-shot) use, in order."""
    found: list[dict] = []
    for variant in params.evaluated_models:
        backbone = params.backbone_dict(variant)
        if backbone not in found:
            found.append(backbone)
    return found


def run(params, layout) -> list[dict]:
    records = [weights.obtain(b["name"], b["pretrained"], layout.weights()) for b in backbones_in_use(params)]
    layout.weights_store().mkdir(parents=True, exist_ok=True)  # the (possibly empty) store of fetched weights
    write_json(layout.weights_manifest(), {"backbones": records})
    for record in records:
        log.info("backbone %s: %s%s", record["backbone"], record["kind"],
                 f" ({record['file']})" if record["file"] else "")
    return records
