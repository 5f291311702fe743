"""The training loop: one run = (dataset, model variant, seed).

Reads only the frame cache and the annotation table. Writes, under data/checkpoints/<dataset>/<model>/seeds/<seed>/:
  state/last.pt   everything needed to resume (model, optimizer, scheduler, RNG states, step, log, best score),
                  written atomically every `train.checkpoint_every` steps and at each epoch's end
  state/best.pt   the weights with the best validation R@1 so far (datasets with a validation split)
  model.pt        the weights to evaluate (best on validation, else last), written when training completes
  train_log.csv   step, epoch, loss (total and per level), lr, samples/s
  val_log.csv     step, epoch, validation t2v R@1/R@5/R@10/MdR
A re-run resumes from state/last.pt when it belongs to an unfinished run with the same configuration; a finished or
differently configured state starts a fresh run. A non-finite loss stops training with an error naming the step and
the level, leaving last.pt at the last good step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hcmi import metrics
from hcmi.config import Params, fingerprint
from hcmi.data.annotations import split_table
from hcmi.data.frames import FrameCache
from hcmi.data.loader import CaptionVideoPairs, EpochBatches, epoch_loader
from hcmi.errors import HcmiError
from hcmi.evaluate import (TestSet, combine_levels, encode_texts, encode_videos, level_similarity_matrices,
                           resolve_device)
from hcmi.files import atomic_path, write_table
from hcmi.losses import retrieval_loss
from hcmi.model import build_model, create_backbone
from hcmi.model.backbone import tokenizer

log = logging.getLogger(__name__)

STATE_FORMAT = 1


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


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: not on biases, norms, embeddings or the temperature (as CLIP does)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim >= 2 and "embedding" not in name:
            decay.append(param)
        else:
            no_decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    try:  # the fused kernel is several times faster (CPU and CUDA) where this torch build has it
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr)


def _file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class Trainer:
    def __init__(self, params: Params, dataset: str, variant: str, seed: int, layout):
        self.params, self.dataset, self.variant, self.seed, self.layout = params, dataset, variant, seed, layout
        self.cfg = params.train
        self.data_params = params.dataset(dataset)
        self.variant_cfg = params.variant_dict(variant)
        self.device = resolve_device(self.cfg.device)
        self.state_dir = layout.train_state(dataset, variant, seed)
        self.last_path, self.best_path = self.state_dir / "last.pt", self.state_dir / "best.pt"

        annotations = pd.read_parquet(layout.annotations(dataset))
        train_cache = FrameCache(layout.frames(dataset, "train"))
        self.fingerprint = fingerprint(
            params.raw["train"], params.raw["backbone"], self.variant_cfg, params.raw["data"][dataset], seed,
            _file_digest(layout.annotations(dataset)), _file_digest(layout.frame_index(dataset, "train")),
        )

        seed_everything(seed)
        backbone = create_backbone(params.backbone.name, params.backbone.pretrained)
        if train_cache.frame_shape and train_cache.frame_shape[1] != backbone.image_size:
            raise TrainingError(
                f"{layout.frames(dataset, 'train')}: cached frames are {train_cache.frame_shape[1]} px but backbone "
                f"{params.backbone.name} takes {backbone.image_size} px; set frames.image_size: {backbone.image_size}")
        if self.data_params.max_words > backbone.context_length:
            raise TrainingError(f"data.{dataset}.max_words={self.data_params.max_words} exceeds the context length "
                                f"{backbone.context_length} of {params.backbone.name}")
        self.objective = params.variant(variant)
        self.model = build_model(self.objective, backbone).to(self.device)
        self.tokenize = tokenizer(params.backbone.name, self.data_params.max_words)

        train_rows = split_table(annotations, "train")
        self.train_set = CaptionVideoPairs(train_cache, list(train_rows["video_id"]), list(train_rows["text"]),
                                           self.tokenize)
        if self.train_set.dropped:
            log.warning("%d training captions dropped: their videos are not in the frame cache",
                        self.train_set.dropped)
        if len(self.train_set) < self.cfg.batch_size:
            raise TrainingError(f"{dataset}: {len(self.train_set)} training pairs, fewer than one batch "
                                f"(train.batch_size={self.cfg.batch_size})")
        self.val = None  # (test set, cache) of the validation split, when the protocol has one
        val_cache = FrameCache(layout.frames(dataset, "val"))
        if len(val_cache):
            self.val = (TestSet(annotations, val_cache, "val"), val_cache)

        self.steps_per_epoch = EpochBatches.batches_per_epoch(len(self.train_set), self.cfg.batch_size)
        self.total_steps = max(1, int(round(self.cfg.epochs * self.steps_per_epoch)))
        self.optimizer = make_optimizer(self.model, self.cfg.lr, self.cfg.weight_decay)
        warmup = max(1, int(self.cfg.warmup_fraction * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(self.total_steps, warmup))
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
        with atomic_path(self.last_path) as tmp:
            torch.save(self._state(finished), tmp)

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

    # -- one step, validation ----------------------------------------------------------------------------------

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, frames, mask, tokens) -> dict[str, float]:
        self.model.train()
        with self._autocast():
            video = self.model.encode_video(frames.to(self.device), mask.to(self.device))
            text = self.model.encode_text(tokens.to(self.device))
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
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return values

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
            log.info("training %s/%s seed %d: %d pairs, %d steps (%d per epoch), batch %d, device %s, %d threads",
                     self.dataset, self.variant, self.seed, len(self.train_set), self.total_steps,
                     self.steps_per_epoch, self.cfg.batch_size, self.device, torch.get_num_threads())
        with progress(total=self.total_steps, initial=self.step, desc="train", unit="step") as bar:
            self._loop(bar)
        return self.finish()

    def _loop(self, bar) -> None:
        tick, tick_step = time.time(), self.step
        while self.step < self.total_steps:
            epoch, start_batch = divmod(self.step, self.steps_per_epoch)
            loader = epoch_loader(self.train_set, self.cfg.batch_size, self.seed, epoch, start_batch)
            for frames, mask, tokens in loader:
                values = self.train_step(frames, mask, tokens)
                bar.update(1)
                if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
                    now = time.time()
                    rate = (self.step - tick_step) * self.cfg.batch_size / max(now - tick, 1e-9)
                    tick, tick_step = now, self.step
                    self.train_rows.append({"step": self.step, "epoch": self.step / self.steps_per_epoch, **values,
                                            "lr": self.scheduler.get_last_lr()[0], "samples_per_s": rate})
                    bar.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)
                end_of_epoch = self.step % self.steps_per_epoch == 0 or self.step == self.total_steps
                if end_of_epoch and self.val is not None:
                    self._validate_and_keep_best()
                if end_of_epoch or self.step % self.cfg.checkpoint_every == 0:
                    self.save_state()
                if end_of_epoch:
                    break

    def _validate_and_keep_best(self) -> None:
        scores = self.validate()
        self.val_rows.append({"step": self.step, "epoch": self.step / self.steps_per_epoch, **scores})
        log.info("step %d validation: t2v R@1 %.1f R@5 %.1f", self.step, scores["R1"], scores["R5"])
        if scores["R1"] > self.best_score:
            self.best_score = scores["R1"]
            with atomic_path(self.best_path) as tmp:
                torch.save({"step": self.step, "score": scores, "state_dict": self.model.state_dict()}, tmp)

    def finish(self) -> dict:
        weights, selected, step = self.model.state_dict(), "last", self.step
        if self.val is not None and self.best_path.exists():
            best = torch.load(self.best_path, map_location="cpu", weights_only=False)
            weights, selected, step = best["state_dict"], "best", best["step"]
        layout, d, m, s = self.layout, self.dataset, self.variant, self.seed
        write_table(layout.train_log(d, m, s), pd.DataFrame(self.train_rows))
        write_table(layout.run(d, m, s) / "val_log.csv",
                    pd.DataFrame(self.val_rows, columns=["step", "epoch", "R1", "R5", "R10", "MdR"]))
        checkpoint = {
            "format": STATE_FORMAT,
            "backbone": {"name": self.params.backbone.name, "pretrained": self.params.backbone.pretrained},
            "variant": m,
            "model": self.variant_cfg,
            "max_words": self.data_params.max_words,
            "image_size": self.model.backbone.image_size,
            "state_dict": weights,
            "selected": selected,
            "step": step,
            "total_steps": self.total_steps,
            "fingerprint": self.fingerprint,
        }
        with atomic_path(layout.model_file(d, m, s)) as tmp:
            torch.save(checkpoint, tmp)
        self.save_state(finished=True)
        log.info("finished %d steps; model.pt holds the %s weights (step %d)", self.total_steps, selected, step)
        return checkpoint


def train_run(params: Params, dataset: str, variant: str, seed: int, layout) -> dict:
    set_threads()
    return Trainer(params, dataset, variant, seed, layout).run()
