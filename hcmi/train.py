"""The training loop: one run = (dataset, model variant, seed).

Reads only the frame cache and the annotation table. Writes, under data/checkpoints/<dataset>/<model>/seeds/<seed>/:
  state/last.pt   everything needed to resume (model, optimizer, scheduler, RNG states, step = data position, logs,
                  best score), written atomically every `train.checkpoint_every` steps and at each epoch's end
  state/best.pt   the weights with the best validation R@1 so far (datasets with a validation split)
  model.pt        the weights to evaluate (best on validation, else last), written when training completes
  train_log.csv   step, epoch, loss (total and per level), lr, samples/s
  val_log.csv     step, epoch, validation t2v R@1/R@5/R@10/MdR
A re-run resumes from state/last.pt when it belongs to an unfinished run with the same configuration; a finished or
differently configured state starts a fresh run. A non-finite loss stops training with an error naming the step and
the level, leaving last.pt at the last good step.

Scale: `compute.train_gpus` > 1 re-launches the command under torchrun (one process per GPU, DDP; the contrastive
batch `train.batch_size` is global: embeddings are gathered across processes); bf16 autocast on CUDA
(`train.amp`); gradient accumulation (`train.accumulation_steps` contrastive batches per optimizer step); the
backbone learns at `train.lr x train.backbone_lr_scale`, the new heads at `train.lr`; optional gradient
checkpointing of the backbone.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hcmi import metrics
from hcmi.config import Params
from hcmi.files import fingerprint
from hcmi.data.annotations import split_table
from hcmi.data.frames import FrameCache
from hcmi.data.loader import CaptionVideoPairs, EpochBatches, epoch_loader
from hcmi.distributed import Distributed, launched_by_torchrun, setup
from hcmi.errors import HcmiError
from hcmi.evaluate import (TestSet, combine_levels, encode_texts, encode_videos, level_similarity_matrices,
                           resolve_device)
from hcmi.files import atomic_path, write_table
from hcmi.losses import retrieval_loss
from hcmi.model import build_model, create_backbone
from hcmi.model.backbone import tokenizer

log = logging.getLogger(__name__)

STATE_FORMAT = 2


class TrainingError(HcmiError, RuntimeError):
    """Training cannot go on (non-finite loss, unusable data); the message says where and why."""


def set_threads() -> int:
    """Use the threads the scheduler granted (OMP_NUM_THREADS, set by Snakemake), never more than the CPUs."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    granted = int(os.environ.get("OMP_NUM_THREADS", available) or available)
    threads = max(1, min(granted, available))
    torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def warmup_cosine(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def param_groups(model: torch.nn.Module, lr: float, backbone_lr_scale: float, weight_decay: float) -> list[dict]:
    """Backbone and new heads at their own learning rates; weight decay on matrices only (not on biases, norms,
    embeddings or the temperature, as CLIP does)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = (name.startswith("backbone."), param.ndim >= 2 and "embedding" not in name)
            groups.setdefault(key, []).append(param)
    return [{"params": params, "lr": lr * (backbone_lr_scale if is_backbone else 1.0),
             "weight_decay": weight_decay if decay else 0.0, "name": ("backbone" if is_backbone else "heads")
             + ("" if decay else "/no-decay")}
            for (is_backbone, decay), params in sorted(groups.items())]


def make_optimizer(groups: list[dict]) -> torch.optim.Optimizer:
    try:  # the fused kernel is several times faster (CPU and CUDA) where this torch build has it
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class Trainer:
    def __init__(self, params: Params, dataset: str, variant: str, seed: int, layout,
                 dist: Distributed | None = None):
        self.params, self.dataset, self.variant, self.seed, self.layout = params, dataset, variant, seed, layout
        self.dist = dist or Distributed()
        self.cfg = params.train
        self.data_params = params.dataset(dataset)
        self.variant_cfg = params.variant_dict(variant)
        self.device = resolve_device(self.cfg.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.state_dir = layout.train_state(dataset, variant, seed)
        self.last_path, self.best_path = self.state_dir / "last.pt", self.state_dir / "best.pt"
        if self.cfg.batch_size % self.dist.world_size:
            raise TrainingError(f"train.batch_size={self.cfg.batch_size} must be divisible by the "
                                f"{self.dist.world_size} training processes")

        annotations = pd.read_parquet(layout.annotations(dataset))
        train_cache = FrameCache(layout.frames(dataset, "train"))
        # the world size is not part of the fingerprint: a run may resume on another number of GPUs
        self.fingerprint = fingerprint(
            params.raw["train"], params.backbone_dict(variant), self.variant_cfg, params.raw["data"][dataset], seed,
            _file_digest(layout.annotations(dataset)), _file_digest(layout.frame_index(dataset, "train")),
        )

        seed_everything(seed)
        self.backbone_cfg = params.backbone_for(variant)
        backbone = create_backbone(self.backbone_cfg.name, self.backbone_cfg.pretrained)
        if train_cache.frame_shape and train_cache.frame_shape[1] != backbone.image_size:
            raise TrainingError(
                f"{layout.frames(dataset, 'train')}: cached frames are {train_cache.frame_shape[1]} px but backbone "
                f"{self.backbone_cfg.name} takes {backbone.image_size} px; set frames.image_size: "
                f"{backbone.image_size}")
        if self.data_params.max_words > backbone.context_length:
            raise TrainingError(f"data.{dataset}.max_words={self.data_params.max_words} exceeds the context length "
                                f"{backbone.context_length} of {self.backbone_cfg.name}")
        if self.cfg.grad_checkpointing:
            backbone.set_grad_checkpointing(True)
        self.objective = params.variant(variant)
        self.model = build_model(self.objective, backbone).to(self.device)
        self.forward = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.model, device_ids=ids)
        self.tokenize = tokenizer(self.backbone_cfg.name, self.data_params.max_words)

        train_rows = split_table(annotations, "train")
        # grouped batches need the data's families (synthetic group_id); data without them are shuffled
        groups = (list(train_rows["group_id"]) if self.cfg.sampler == "grouped" and "group_id" in train_rows
                  else None)
        self.train_set = CaptionVideoPairs(train_cache, list(train_rows["video_id"]), list(train_rows["text"]),
                                           self.tokenize, seed=seed, views=1, groups=groups)
        if self.train_set.dropped:
            log.warning("%d training captions dropped: their videos are not in the frame cache",
                        self.train_set.dropped)
        per_step = self.cfg.batch_size * self.cfg.accumulation_steps
        if len(self.train_set) < per_step:
            raise TrainingError(f"{dataset}: {len(self.train_set)} training pairs, fewer than one step needs "
                                f"(train.batch_size x train.accumulation_steps = {per_step})")
        self.val = None  # (test set, cache) of the validation split, when the protocol has one
        val_cache = FrameCache(layout.frames(dataset, "val"))
        if len(val_cache):
            self.val = (TestSet(annotations, val_cache, "val"), val_cache)

        batches = EpochBatches.batches_per_epoch(len(self.train_set), self.cfg.batch_size)
        self.steps_per_epoch = batches // self.cfg.accumulation_steps
        self.total_steps = max(1, int(round(self.cfg.epochs * self.steps_per_epoch)))
        self.optimizer = make_optimizer(param_groups(self.model, self.cfg.lr, self.cfg.backbone_lr_scale,
                                                     self.cfg.weight_decay))
        warmup = max(1, int(self.cfg.warmup_fraction * self.total_steps))
        self.lr_factor = warmup_cosine(self.total_steps, warmup)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self.step = 0
        self.best_score = -math.inf
        self.train_rows: list[dict] = []
        self.val_rows: list[dict] = []

    # -- state --------------------------------------------------------------------------------------------------

    def _state(self, finished: bool) -> dict:
        return {
            "format": STATE_FORMAT,
            "fingerprint": self.fingerprint,
            "finished": finished,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "best_score": self.best_score,
            "train_rows": self.train_rows,
            "val_rows": self.val_rows,
        }

    def save_state(self, finished: bool = False) -> None:
        if self.dist.is_main:
            with atomic_path(self.last_path) as tmp:
                torch.save(self._state(finished), tmp)
        self.dist.barrier()

    def try_resume(self) -> bool:
        if not self.last_path.exists():
            return False
        try:
            state = torch.load(self.last_path, map_location="cpu", weights_only=False)
        except Exception as exc:  # an unreadable state is reported and replaced, never trusted
            log.warning("%s is unreadable (%s): starting a fresh run", self.last_path, exc)
            return False
        if state.get("format") != STATE_FORMAT or state.get("fingerprint") != self.fingerprint:
            log.info("%s belongs to another configuration: starting a fresh run", self.last_path)
            return False
        if state.get("finished"):
            log.info("%s is a finished run: training again from scratch", self.last_path)
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.step = state["step"]
        self.best_score = state["best_score"]
        self.train_rows, self.val_rows = state["train_rows"], state["val_rows"]
        log.info("resuming from step %d of %d (%s)", self.step, self.total_steps, self.last_path)
        return True

    # -- one optimizer step ------------------------------------------------------------------------------------

    def _autocast(self):
        if self.device.type == "cuda" and self.cfg.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _micro_step(self, frames, mask, tokens) -> tuple[torch.Tensor, dict[str, float]]:
        with self._autocast():
            video, text = self.forward(frames.to(self.device, non_blocking=True),
                                       mask.to(self.device, non_blocking=True), tokens.to(self.device))
            video, text = self.dist.gather(video), self.dist.gather(text)
            sims = self.model.level_similarities(text, video)
            loss, parts = retrieval_loss(sims, self.model.level_weights(), self.model.logit_scale, text=text,
                                         video=video, objective=self.objective,
                                         progress=self.step / self.total_steps)
        values = {"loss": loss.detach().float().item()}
        values.update({f"loss_{level}": part.detach().float().item() for level, part in parts.items()})
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            level = next((k for k in bad if k != "loss"), "loss")
            raise TrainingError(
                f"non-finite loss at step {self.step + 1} ({level} = {bad[level]}); training stopped. "
                f"The last good checkpoint is {self.last_path} (step {self._saved_step()}).")
        return loss, values

    def train_step(self, micro_batches) -> dict[str, float]:
        """One optimizer step over `train.accumulation_steps` contrastive batches."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for i, (views, mask, tokens) in enumerate(micro_batches):
            frames = views[:, 0]  # one view until training uses both (label denoising)
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.forward.no_sync()
            with sync:
                loss, values = self._micro_step(frames, mask, tokens)
                (loss / len(micro_batches)).backward()
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value / len(micro_batches)
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return totals

    def _saved_step(self):
        if not self.last_path.exists():
            return "none written yet"
        return torch.load(self.last_path, map_location="cpu", weights_only=False)["step"]

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        test, cache = self.val
        self.model.eval()
        bs = self.params.eval.batch_size
        video = encode_videos(self.model, cache, test.video_ids, bs, self.device, desc="val videos")
        text = encode_texts(self.model, self.tokenize(list(test.captions["text"])), bs, self.device, desc="val texts")
        levels = level_similarity_matrices(self.model, text, video, self.params.eval.block_memory_mb, self.device)
        result = metrics.summarize_ranks(metrics.text_to_video_ranks(combine_levels(self.model, levels),
                                                                     test.text_video))
        return {k: result[k] for k in ("R1", "R5", "R10", "MdR")}

    # -- the loop ------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        from hcmi.logs import progress

        resumed = self.try_resume()
        if not resumed:
            log.info("training %s/%s seed %d: %d pairs, %d steps (%d per epoch), batch %d x %d accumulated, "
                     "device %s, %d process(es), %d threads", self.dataset, self.variant, self.seed,
                     len(self.train_set), self.total_steps, self.steps_per_epoch, self.cfg.batch_size,
                     self.cfg.accumulation_steps, self.device, self.dist.world_size, torch.get_num_threads())
        with progress(total=self.total_steps, initial=self.step, desc="train", unit="step",
                      disable=not self.dist.is_main) as bar:
            self._loop(bar)
        return self.finish()

    def _epoch_batches(self):
        """(epoch, iterator over lists of micro-batches) from the current step: the exact data position."""
        epoch, step_in_epoch = divmod(self.step, self.steps_per_epoch)
        loader = epoch_loader(self.train_set, self.cfg.batch_size, self.seed, epoch,
                              step_in_epoch * self.cfg.accumulation_steps, self.cfg.workers, self.dist.rank,
                              self.dist.world_size, groups=self.train_set.groups)
        batches = iter(loader)
        while True:
            group = [batch for _, batch in zip(range(self.cfg.accumulation_steps), batches)]
            if len(group) < self.cfg.accumulation_steps:
                return
            yield group

    def _loop(self, bar) -> None:
        tick, tick_step = time.time(), self.step
        while self.step < self.total_steps:
            for micro_batches in self._epoch_batches():
                values = self.train_step(micro_batches)
                bar.update(1)
                if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
                    now = time.time()
                    samples = (self.step - tick_step) * self.cfg.batch_size * self.cfg.accumulation_steps
                    rate = samples / max(now - tick, 1e-9)
                    tick, tick_step = now, self.step
                    self.train_rows.append({"step": self.step, "epoch": self.step / self.steps_per_epoch, **values,
                                            "lr": self.cfg.lr * self.lr_factor(self.step), "samples_per_s": rate})
                    bar.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)
                end_of_epoch = self.step % self.steps_per_epoch == 0 or self.step == self.total_steps
                if end_of_epoch and self.val is not None:
                    self._validate_and_keep_best()
                if end_of_epoch or self.step % self.cfg.checkpoint_every == 0:
                    self.save_state()
                if end_of_epoch:
                    break

    def _validate_and_keep_best(self) -> None:
        if self.dist.is_main:
            scores = self.validate()
            self.val_rows.append({"step": self.step, "epoch": self.step / self.steps_per_epoch, **scores})
            log.info("step %d validation: t2v R@1 %.1f R@5 %.1f", self.step, scores["R1"], scores["R5"])
            if scores["R1"] > self.best_score:
                self.best_score = scores["R1"]
                with atomic_path(self.best_path) as tmp:
                    torch.save({"step": self.step, "score": scores, "state_dict": self.model.state_dict()}, tmp)
        self.dist.barrier()

    def finish(self) -> dict:
        weights, selected, step = self.model.state_dict(), "last", self.step
        if self.val is not None and self.best_path.exists():
            best = torch.load(self.best_path, map_location="cpu", weights_only=False)
            weights, selected, step = best["state_dict"], "best", best["step"]
        checkpoint = {
            "format": STATE_FORMAT,
            "backbone": {"name": self.backbone_cfg.name, "pretrained": self.backbone_cfg.pretrained},
            "variant": self.variant,
            "model": self.variant_cfg,
            "max_words": self.data_params.max_words,
            "image_size": self.model.backbone.image_size,
            "state_dict": weights,
            "selected": selected,
            "step": step,
            "total_steps": self.total_steps,
            "fingerprint": self.fingerprint,
        }
        if self.dist.is_main:
            layout, d, m, s = self.layout, self.dataset, self.variant, self.seed
            write_table(layout.train_log(d, m, s), pd.DataFrame(self.train_rows))
            write_table(layout.run(d, m, s) / "val_log.csv",
                        pd.DataFrame(self.val_rows, columns=["step", "epoch", "R1", "R5", "R10", "MdR"]))
            with atomic_path(layout.model_file(d, m, s)) as tmp:
                torch.save(checkpoint, tmp)
            log.info("finished %d steps; model.pt holds the %s weights (step %d)", self.total_steps, selected, step)
        self.save_state(finished=True)
        return checkpoint


def relaunch_under_torchrun(processes: int) -> None:
    """Replace this process by torchrun running the same command in `processes` processes (one per GPU)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "hcmi.cli", *sys.argv[1:]]
    log.info("compute.train_gpus=%d: relaunching under torchrun: %s", processes, " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def train_run(params: Params, dataset: str, variant: str, seed: int, layout) -> dict | None:
    gpus = params.compute.train_gpus
    if gpus > 1 and not launched_by_torchrun():
        if not torch.cuda.is_available() or torch.cuda.device_count() < gpus:
            raise TrainingError(f"compute.train_gpus={gpus} but {torch.cuda.device_count()} CUDA device(s) visible")
        relaunch_under_torchrun(gpus)
    set_threads()
    dist = setup()
    try:
        return Trainer(params, dataset, variant, seed, layout, dist).run()
    finally:
        dist.shutdown()
