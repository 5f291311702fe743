"""`hcmi probe --dataset D --model M --seed S`: what label denoising and marginal sample enhancement act on in that
run's training batches (hcmi/probe.py), printed, and written as JSON to data/probes/<dataset>/<model>/seeds/<seed>/
probe.json (no pipeline step reads it)."""

from __future__ import annotations

import logging

import torch

from hcmi import probe, runtime
from hcmi.files import write_json
from hcmi.steps.evaluate import load_model

log = logging.getLogger(__name__)


def run(params, layout, dataset: str, variant: str, seed: int, batches: int, epoch: int) -> dict:
    compute = params.compute
    runtime.configure("cpu", compute.train_threads, compute.deterministic, compute.numerics)
    model, checkpoint = load_model(layout.model_file(dataset, variant, seed), torch.device("cpu"),
                                   f"run `hcmi train --dataset {dataset} --model {variant} --seed {seed}` first")
    objective = checkpoint["model"]
    result = probe.probe(model, layout.annotations(dataset), layout.frames(dataset, "train"), dataset, seed,
                         checkpoint["max_words"], params.train.batch_size, batches, epoch,
                         similarity=objective["denoise"]["similarity"], margin=objective["enhance"]["margin"])
    result.update({"dataset": dataset, "model": variant, "seed": seed, "epoch": epoch})
    out = layout.root / "probes" / dataset / variant / "seeds" / str(seed) / "probe.json"  # no step reads it
    write_json(out, result)
    print(probe.format_report(result))
    log.info("written: %s", out)
    return result
