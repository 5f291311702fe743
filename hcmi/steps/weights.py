"""`hcmi weights`: make every configured backbone's weights local (an open_clip tag is fetched once into
data/weights/files/, network needed once; the tag synthetic-stills is pretrained here, on the embedded benchmark's still
images) and record in data/weights/backbone.json what training will load."""

from __future__ import annotations

import logging
import time

import pandas as pd

from hcmi import codebase, config, provenance, runtime, weights
from hcmi.data.stills import render_stills, stills
from hcmi.files import fingerprint, read_json, write_json, write_table
from hcmi.model.backbone import create_backbone, input_size
from hcmi.parameters import PretrainParams
from hcmi.pretrain import Corpus, pretrain

log = logging.getLogger(__name__)

def corpus(source: PretrainParams, part: str, image_size: int) -> Corpus:
    items = stills(source, part)
    return Corpus(render_stills(items, source.size, image_size), [s.caption for s in items],
                  [s.content for s in items])


def pretrain_on_stills(params, layout, name: str) -> dict:
    """Pretrain backbone `name` on the still images (params `pretrain`) into its synthetic-stills weights file,
    unless that file was made from the same parameters and code; returns what the pretraining measured."""
    path = weights.weights_file(name, weights.STILLS_TAG, layout.weights())
    record_path = path.with_suffix(".json")
    identity = fingerprint(name, params.pretraining_inputs(), codebase.code_hash(__name__))
    if path.exists() and record_path.exists() and read_json(record_path).get("identity") == identity:
        log.info("backbone %s: %s is up to date", name, path)
        return read_json(record_path)
    started = time.time()
    compute = params.compute
    run_env = runtime.configure(compute.device, compute.train_threads, compute.deterministic, compute.numerics)
    cfg = params.get("pretrain")
    source = PretrainParams.model_validate(cfg)
    size = input_size(name)
    log.info("pretraining %s on %d still images (%d held out), %d epochs", name, source.images, source.held_out,
             cfg["epochs"])
    train_corpus, held_out = corpus(source, "train", size), corpus(source, "held_out", size)
    runtime.seed_everything(source.seed)
    backbone = create_backbone(name).to(run_env.device)
    result = pretrain(backbone, train_corpus, held_out, source, source.seed)
    weights.save_state_dict(path, result.state_dict)
    write_table(path.with_suffix(".log.csv"), pd.DataFrame(result.log_rows))
    record = {"identity": identity, "held_out": result.held_out, "steps": len(result.log_rows),
              "provenance": provenance.collect(
                  module=__name__, params=provenance.params_record(["pretrain", *config.PRETRAIN_COMPUTE],
                                                                   params.pretraining_inputs()),
                  data={}, runtime=run_env, started=started)}
    write_json(record_path, record)
    return record


def run(params, layout) -> list[dict]:
    records = []
    for b in params.backbones_in_use():
        pretraining = pretrain_on_stills(params, layout, b["name"]) if b["pretrained"] == weights.STILLS_TAG else None
        record = weights.obtain(b["name"], b["pretrained"], layout.weights())
        if pretraining:
            record["held_out_retrieval"] = pretraining["held_out"]
        records.append(record)
    layout.weights_store().mkdir(parents=True, exist_ok=True)  # the (possibly empty) store of fetched weights
    write_json(layout.weights_manifest(), {"backbones": records})
    for record in records:
        log.info("backbone %s: %s%s", record["backbone"], record["kind"],
                 f" ({record['file']})" if record["file"] else "")
    return records
