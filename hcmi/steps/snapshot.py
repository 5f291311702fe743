"""`hcmi snapshot --dataset D --model M`: the model.pt of a variant evaluated without training (params `zero_shot`): the
backbone's weights as they are (such as OpenAI's CLIP), with the variant's head freshly built — for the mean-pooling
head, CLIP's zero-shot retrieval. Evaluation then reads it like any trained model (its seed is 0); its training and
validation logs are written empty, as no step was taken."""

from __future__ import annotations

import logging
import time

import pandas as pd

from hcmi import checkpoints, provenance, runtime
from hcmi.config import ZERO_SHOT_SEED
from hcmi.files import fingerprint, write_table
from hcmi.model import create_backbone
from hcmi.model.factory import build_model
from hcmi.steps.common import VAL_COLUMNS, fingerprints
from hcmi.weights import load_backbone_weights

log = logging.getLogger(__name__)


def run(params, layout, dataset: str, variant: str):
    started = time.time()
    backbone_cfg = params.backbone_dict(variant)
    runtime.seed_everything(ZERO_SHOT_SEED)  # a head with parameters starts from the same draw every time
    backbone = create_backbone(backbone_cfg["name"], load_backbone_weights(backbone_cfg["name"],
                                                                           backbone_cfg["pretrained"],
                                                                           layout.weights()))
    model = build_model(params.variant(variant), backbone)
    data = fingerprints({"weights": layout.weights_manifest()})
    record = provenance.collect(
        module=__name__, params=provenance.params_record(list(params.allowed or []), params.declared_values()),
        data=data, runtime=None, started=started)
    write_table(layout.train_log(dataset, variant, ZERO_SHOT_SEED), pd.DataFrame(columns=["step", "epoch", "loss"]))
    write_table(layout.val_log(dataset, variant, ZERO_SHOT_SEED), pd.DataFrame(columns=VAL_COLUMNS))
    checkpoints.save(layout.model_file(dataset, variant, ZERO_SHOT_SEED), {
        "backbone": {"name": backbone.name, "pretrained": backbone_cfg["pretrained"]}, "variant": variant,
        "model": params.variant_dict(variant), "max_words": params.dataset(dataset).max_words,
        "max_frames": params.dataset(dataset).max_frames,
        "image_size": backbone.image_size, "state_dict": model.state_dict(), "selected": "untrained", "step": 0,
        "total_steps": 0, "fingerprint": fingerprint(params.declared_values(), data), "provenance": record})
    log.info("%s/%s: the %s weights as they are, not trained (zero-shot)", dataset, variant,
             backbone_cfg["pretrained"] or "randomly initialised")
