"""`hcmi train --dataset D --model M --seed S`: train one model variant with one seed (resumes an interrupted run).

Reads only the frame caches, the annotation table and the backbone weights; writes, under
data/checkpoints/<dataset>/<model>/seeds/<seed>/:
  model.pt        the weights to evaluate (train.select: best on validation, or last), the model's configuration (it rebuilds
                  from the file alone) and the provenance of the run; loads without running code
  train_log.csv   step, epoch, loss (total, per level, triplet), latent positives per item, lr, samples/s
  val_log.csv     step, epoch, validation t2v R@1/R@5/R@10/MdR
  state/          last.pt (resume point) and, with train.select best, best.pt
With compute.train_gpus > 1 the same command re-launches itself under torchrun (one process per GPU, DDP).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time

import pandas as pd
import torch

from hcmi import checkpoints, codebase, provenance, runtime
from hcmi.data.annotations import read_annotations, split_table
from hcmi.data.frames import FrameCache
from hcmi.data.loader import CaptionVideoPairs
from hcmi.data.splits import RetrievalSplit
from hcmi.distributed import launched_by_torchrun, setup
from hcmi.files import fingerprint, write_table
from hcmi.memory import job_chunk
from hcmi.model import create_backbone
from hcmi.model.factory import build_model
from hcmi.model.backbone import tokenizer
from hcmi.parameters import TrainParams
from hcmi.steps.common import VAL_COLUMNS, fingerprints
from hcmi.trainer import TrainingError, TrainingJob, Validation, train
from hcmi.weights import load_backbone_weights

log = logging.getLogger(__name__)


def relaunch_under_torchrun(processes: int) -> None:
    """Replace this process by torchrun running the same command in `processes` processes (one per GPU)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "hcmi.cli", *sys.argv[1:]]
    log.info("compute.train_gpus=%d: relaunching under torchrun: %s", processes, " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def _inputs(layout, dataset: str) -> dict:
    return {"annotations": layout.annotations(dataset), "train_frames": layout.frames(dataset, "train"),
            "val_frames": layout.frames(dataset, "val"), "weights": layout.weights_manifest()}


def gradcache_chunk(params, dataset: str, variant: str, run_env) -> int:
    """train.gradcache_chunk, with `auto` resolved by the memory plan for a GPU (on the CPU: no caching)."""
    if params.train.gradcache_chunk == "auto" and run_env.device.type != "cuda":
        return 0
    return job_chunk(params, dataset, variant)


def build_job(params, layout, dataset: str, variant: str, seed: int, run_env, dist) -> TrainingJob:
    cfg = TrainParams.model_validate({**params.train_dict(variant),
                                      "gradcache_chunk": gradcache_chunk(params, dataset, variant, run_env)})
    if cfg.gradcache_chunk:
        log.info("gradient caching: the batch of %d is encoded in chunks of %d", cfg.batch_size, cfg.gradcache_chunk)
    annotations = read_annotations(layout.annotations(dataset), dataset)
    backbone_cfg = params.backbone_dict(variant)
    objective = params.variant(variant)
    max_words = params.dataset(dataset).max_words
    runtime.seed_everything(seed)
    backbone = create_backbone(backbone_cfg["name"],
                               load_backbone_weights(backbone_cfg["name"], backbone_cfg["pretrained"],
                                                     layout.weights()))
    train_cache = FrameCache(layout.frames(dataset, "train"), cfg.decoded_frames_mb)
    if train_cache.frame_shape and train_cache.frame_shape[1] != backbone.image_size:
        raise TrainingError(f"{layout.frames(dataset, 'train')}: cached frames are {train_cache.frame_shape[1]} px "
                            f"but backbone {backbone.name} takes {backbone.image_size} px; set frames.image_size: "
                            f"{backbone.image_size}")
    if max_words > backbone.context_length:
        raise TrainingError(f"data.{dataset}.max_words={max_words} exceeds the context length "
                            f"{backbone.context_length} of {backbone.name}")
    if cfg.grad_checkpointing:
        backbone.set_grad_checkpointing(True)
    tokenize = tokenizer(backbone.name, max_words)
    rows = split_table(annotations, "train")
    groups = list(rows["group_id"]) if "group_id" in rows and params.train.sampler == "grouped" else None
    contents = list(rows["content_id"]) if "content_id" in rows else None
    pairs = CaptionVideoPairs(train_cache, list(rows["video_id"]), list(rows["text"]), tokenize, seed,
                              views=2 if objective.two_views else 1, groups=groups, contents=contents)
    if pairs.dropped:
        log.warning("%d training captions dropped: their videos are not in the frame cache", pairs.dropped)
    validation = None
    val_cache = FrameCache(layout.frames(dataset, "val"))
    if len(val_cache):
        validation = Validation(RetrievalSplit(annotations, val_cache, "val"), val_cache, tokenize,
                                params.eval.batch_size, params.eval.block_memory_mb)
    # the run's identity: a state written for other parameters, data or code is never resumed (the world size is
    # not part of it: a run may resume on another number of GPUs)
    identity = fingerprint(params.declared_values(), seed, fingerprints(_inputs(layout, dataset)),
                           codebase.code_hash(__name__, heads=(objective.head,)))
    return TrainingJob(build_model(objective, backbone), objective, pairs, validation, cfg, seed,
                       layout.train_state(dataset, variant, seed), identity, run_env, dist)


def run(params, layout, dataset: str, variant: str, seed: int):
    started = time.time()
    compute = params.compute
    if compute.train_gpus > 1 and not launched_by_torchrun():
        if not torch.cuda.is_available() or torch.cuda.device_count() < compute.train_gpus:
            raise TrainingError(f"compute.train_gpus={compute.train_gpus} but {torch.cuda.device_count()} CUDA "
                                "device(s) visible")
        relaunch_under_torchrun(compute.train_gpus)
    run_env = runtime.configure(compute.device, compute.train_threads, compute.deterministic, compute.numerics)
    dist = setup()
    if run_env.device.type == "cuda" and dist.enabled:
        run_env = dataclasses.replace(run_env, device=torch.device("cuda", dist.local_rank))
    try:
        job = build_job(params, layout, dataset, variant, seed, run_env, dist)
        log.info("training %s/%s seed %d", dataset, variant, seed)
        result = train(job)
        if dist.is_main:
            write_outputs(params, layout, dataset, variant, seed, job, result, run_env, started)
        return result
    finally:
        dist.shutdown()


def write_outputs(params, layout, dataset, variant, seed, job, result, run_env, started) -> None:
    backbone = job.model.backbone
    record = provenance.collect(
        module=__name__,
        params=provenance.params_record(list(params.allowed or []), params.declared_values()),
        data=fingerprints(_inputs(layout, dataset)), runtime=run_env, started=started)
    write_table(layout.train_log(dataset, variant, seed), pd.DataFrame(result.train_rows))
    write_table(layout.val_log(dataset, variant, seed), pd.DataFrame(result.val_rows, columns=VAL_COLUMNS))
    checkpoints.save(layout.model_file(dataset, variant, seed), {
        "backbone": {"name": backbone.name, "pretrained": params.backbone_dict(variant)["pretrained"]},
        "variant": variant, "model": params.variant_dict(variant), "max_words": params.dataset(dataset).max_words,
        "max_frames": params.dataset(dataset).max_frames, "image_size": backbone.image_size,
        "state_dict": result.weights, "selected": result.selected, "step": result.step,
        "total_steps": result.total_steps, "fingerprint": job.fingerprint, "provenance": record})
    log.info("model.pt holds the %s weights (step %d of %d)", result.selected, result.step, result.total_steps)
