"""The training loop of one run (a model, a dataset, a seed), resumable exactly. It knows no params files and no
paths but the state folder it is given; hcmi/steps/train.py builds a TrainingJob and writes the results.

    train(job):
        optimizer (AdamW: backbone and heads at their own learning rates) and schedule (warm-up, cosine)
        resume from state/last.pt when it belongs to this run (same fingerprint, unfinished)
        for each optimizer step, from the exact data position reached:
            accumulation_steps contrastive batches -> loss -> backward; clip; optimizer and schedule step
            every log_every steps a row of train_log; at each epoch's end validate (and keep the best weights)
            every checkpoint_every steps write state/last.pt (atomically); at the end, the finished state
        the weights to evaluate: the best on validation (train.select: best, where there is a validation split),
        else the last

A non-finite loss stops training with an error naming the step and the level, leaving last.pt at the last good step.
Scale: DDP (the contrastive batch is global: embeddings are gathered across processes), bf16 autocast on CUDA,
gradient accumulation, backbone gradient checkpointing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hcmi import checkpoints, metrics, train_state
from hcmi.data.loader import CaptionVideoPairs, EpochBatches, epoch_loader
from hcmi.data.frames import FrameCache
from hcmi.data.splits import RetrievalSplit
from hcmi.distributed import Distributed
from hcmi.errors import HcmiError
from hcmi.gradcache import cached_backward
from hcmi.logs import progress as progress_bar
from hcmi.losses import LossResult, retrieval_loss
from hcmi.model.retrieval import RetrievalModel
from hcmi.optim import make_optimizer, param_groups, warmup_cosine
from hcmi.parameters import TrainParams
from hcmi.runtime import Runtime
from hcmi.scoring import score_split

log = logging.getLogger(__name__)


class TrainingError(HcmiError, RuntimeError):
    """Training cannot go on (non-finite loss, unusable data); the message says where and why."""


@dataclass(frozen=True)
class Validation:
    split: RetrievalSplit
    cache: FrameCache
    tokenize: object  # texts -> token ids
    batch_size: int
    memory_mb: float


@dataclass(frozen=True)
class TrainingJob:
    model: RetrievalModel
    objective: object  # ModelParams: denoise and enhance sections
    pairs: CaptionVideoPairs
    validation: Validation | None
    config: TrainParams  # gradcache_chunk resolved to a number
    seed: int
    state_dir: Path
    fingerprint: str  # identifies the run: a state written for another fingerprint is never resumed
    runtime: Runtime
    dist: Distributed = field(default_factory=Distributed)


@dataclass(frozen=True)
class TrainResult:
    weights: dict
    selected: str  # "best" (validation) or "last"
    step: int  # the step the weights are from
    total_steps: int
    train_rows: list
    val_rows: list


# -- builders -----------------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def latent_diagnostics(latent: torch.Tensor, contents: list, items: torch.Tensor) -> dict[str, float]:
    """How many of the latent positives are true duplicates (the same content), and how many true duplicates of the
    batch were found: what label denoising is for, measured where the data say which videos show the same thing."""
    codes = torch.tensor([contents[i] for i in items.tolist()], device=latent.device)
    same = codes[:, None] == codes[None, :]
    same.fill_diagonal_(False)
    found, duplicates = latent.sum().item(), same.sum().item()
    hits = (latent & same).sum().item()
    return {"latent_precision": hits / found if found else float("nan"),
            "latent_recall": hits / duplicates if duplicates else float("nan")}


def steps_per_epoch(job: TrainingJob) -> int:
    return EpochBatches.batches_per_epoch(len(job.pairs), job.config.batch_size) // job.config.accumulation_steps


# -- the loop -----------------------------------------------------------------------------------------------------


class _Run:
    """One training run in progress: the model, its optimizer and schedule, and where the loop stands."""

    def __init__(self, job: TrainingJob):
        cfg = job.config
        self.job, self.cfg, self.device, self.dist = job, cfg, job.runtime.device, job.dist
        self.model = job.model.to(self.device)
        self.forward = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.model, device_ids=ids)
        self.steps_per_epoch = steps_per_epoch(job)
        self.total_steps = max(1, int(round(cfg.epochs * self.steps_per_epoch)))
        self.schedule = warmup_cosine(self.total_steps, max(1, int(cfg.warmup_fraction * self.total_steps)))
        self.optimizer = make_optimizer(param_groups(self.model, cfg.lr, cfg.backbone_lr_scale, cfg.weight_decay))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.last_path, self.best_path = job.state_dir / "last.pt", job.state_dir / "best.pt"
        self.progress = train_state.Progress()

    # -- state (hcmi/train_state.py) -------------------------------------------------------------------------

    def save_state(self, finished: bool = False) -> None:
        if self.dist.is_main:
            train_state.save(self.last_path, self.job.fingerprint, self.progress, self.model, self.optimizer,
                             self.scheduler, finished)
        self.dist.barrier()

    def resume(self) -> bool:
        progress = train_state.restore(self.last_path, self.job.fingerprint, self.model, self.optimizer,
                                       self.scheduler)
        if progress is None:
            return False
        self.progress = progress
        log.info("resuming from step %d of %d (%s)", progress.step, self.total_steps, self.last_path)
        return True

    # -- one optimizer step -----------------------------------------------------------------------------------

    def optimizer_step(self, micro_batches) -> dict[str, float]:
        """One optimizer step, top to bottom. Each contrastive batch of the accumulation (frames [B, views, N, H, W,
        3]: view 0 is trained, view 1 only tells latent positives apart) adds its share of the gradient, computed at
        once or, with gradient caching (hcmi/gradcache.py), chunk by chunk: the same gradients at the memory of one
        chunk. Then clipping, the optimizer and the schedule. Returns the logged values averaged over the batches (a
        diagnostic that is NaN in a batch, such as the precision of no latent positive, is left out of its mean)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        share = 1.0 / len(micro_batches)
        collected: dict[str, list[float]] = {}
        for i, (frames, mask, tokens, items) in enumerate(micro_batches):
            last = i == len(micro_batches) - 1  # DDP reduces the gradients once: in the last batch's backward
            frames = frames.to(self.device, non_blocking=True)
            mask, tokens = mask.to(self.device, non_blocking=True), tokens.to(self.device)
            second = self.encode_second_view(frames, mask)  # no gradients; None without two-view denoising

            def loss_of(video, text):  # the batch's objective, from its local representations, at its share
                result = self.objective(video, text, second, items)
                return result.total * share, result

            inputs = (frames[:, 0], mask, tokens)
            if self.cfg.gradcache_chunk > 0:
                _, result = cached_backward(self.forward, inputs, self.cfg.gradcache_chunk, loss_of,
                                            sync_context=lambda last_chunk: self.synchronised(last and last_chunk),
                                            forward_context=self.autocast)
            else:
                with self.synchronised(last), self.autocast():
                    loss, result = loss_of(*self.forward(*inputs))
                loss.backward()
            values = {"loss": result.total.detach().float().item(),
                      **{f"loss_{k}": v.detach().float().item() for k, v in result.parts.items()}, **result.stats}
            self.check_finite(values)
            for key, value in values.items():
                collected.setdefault(key, []).append(value)
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.progress.step += 1
        return {key: _mean(values) for key, values in collected.items()}

    def autocast(self):
        if self.device.type == "cuda" and self.cfg.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def synchronised(self, reduce: bool):
        """Around a backward: DDP reduces gradients across processes only where `reduce` (no_sync() elsewhere)."""
        return contextlib.nullcontext() if reduce or not self.dist.enabled else self.forward.no_sync()

    def encode_second_view(self, frames, mask) -> dict | None:
        """The gathered representation of each video's second view (two-view denoising), without gradients."""
        if frames.shape[1] < 2:
            return None
        with torch.no_grad(), self.autocast():
            return self.dist.gather(self.model.encode_video(frames[:, 1], mask))

    def objective(self, video: dict, text: dict, second: dict | None, items) -> LossResult:
        """The objective of one contrastive batch, from its local representations (gathered across processes)."""
        video, text = self.dist.gather(video), self.dist.gather(text)
        sims = self.model.level_similarities(text, video)
        result = retrieval_loss(sims, self.model.level_weights(), self.model.logit_scale, objective=self.job.objective,
                                text=text, video=video, second_view=second,
                                progress=self.progress.step / self.total_steps)
        if result.latent is not None and self.job.pairs.contents is not None:
            result.stats.update(latent_diagnostics(result.latent, self.job.pairs.contents,
                                                   self.dist.gather({"items": items.to(self.device)})["items"]))
        return result

    def check_finite(self, values: dict) -> None:
        bad = {k: v for k, v in values.items() if k.startswith("loss") and not math.isfinite(v)}
        if bad:
            level = next((k for k in bad if k != "loss"), "loss")
            raise TrainingError(
                f"non-finite loss at step {self.progress.step + 1} ({level} = {bad[level]}); training stopped. "
                f"The last good checkpoint is {self.last_path} (step {train_state.saved_step(self.last_path)}).")

    # -- validation -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        val = self.job.validation
        _, final = score_split(self.model, val.split, val.cache, val.tokenize, val.batch_size, val.memory_mb,
                               self.device)
        result = metrics.summarize_ranks(metrics.text_to_video_ranks(final, val.split.text_video))
        return {k: result[k] for k in ("R1", "R5", "R10", "MdR")}

    def validate_and_keep_best(self) -> None:
        """Validate (a row of val_log) and, where train.select is best, keep the weights with the best t2v R@1."""
        if self.dist.is_main:
            scores = self.validate()
            step = self.progress.step
            self.progress.val_rows.append({"step": step, "epoch": step / self.steps_per_epoch, **scores})
            log.info("step %d validation: t2v R@1 %.1f R@5 %.1f", step, scores["R1"], scores["R5"])
            if self.cfg.select == "best" and scores["R1"] > self.progress.best_score:
                self.progress.best_score = scores["R1"]
                checkpoints.save(self.best_path, {"step": step, "score": scores,
                                                  "state_dict": self.model.state_dict()})
        self.dist.barrier()

    # -- the loop ---------------------------------------------------------------------------------------------

    def epoch_steps(self, epoch: int, done: int):
        """The rest of `epoch` from optimizer step `done` on, as lists of micro-batches: the exact data position."""
        cfg, pairs = self.cfg, self.job.pairs
        loader = epoch_loader(pairs, cfg.batch_size, self.job.seed, epoch, done * cfg.accumulation_steps,
                              cfg.workers, self.dist.rank, self.dist.world_size, pairs.batch_groups)
        batches = iter(loader)
        while len(group := [batch for _, batch in zip(range(cfg.accumulation_steps), batches)]) == \
                cfg.accumulation_steps:
            yield group

    def log_row(self, values: dict, since: tuple[float, int]) -> tuple[float, int]:
        now, step = time.time(), self.progress.step
        samples = (step - since[1]) * self.cfg.batch_size * self.cfg.accumulation_steps
        self.progress.train_rows.append({"step": step, "epoch": step / self.steps_per_epoch, **values,
                                         "lr": self.cfg.lr * self.schedule(step),
                                         "samples_per_s": samples / max(now - since[0], 1e-9)})
        return now, step

    def run(self) -> TrainResult:
        if not self.resume():
            log.info("training: %d pairs, %d steps (%d per epoch), batch %d x %d accumulated, device %s, "
                     "%d process(es), %d threads", len(self.job.pairs), self.total_steps, self.steps_per_epoch,
                     self.cfg.batch_size, self.cfg.accumulation_steps, self.device, self.dist.world_size,
                     torch.get_num_threads())
        since = (time.time(), self.progress.step)
        with progress_bar(total=self.total_steps, initial=self.progress.step, desc="train", unit="step",
                          disable=not self.dist.is_main) as bar:
            while self.progress.step < self.total_steps:
                epoch, done = divmod(self.progress.step, self.steps_per_epoch)
                for micro_batches in self.epoch_steps(epoch, done):
                    values = self.optimizer_step(micro_batches)
                    bar.update(1)
                    step = self.progress.step
                    if step % self.cfg.log_every == 0 or step == self.total_steps:
                        since = self.log_row(values, since)
                        bar.set_postfix(loss=f"{values['loss']:.3f}", refresh=False)
                    end_of_epoch = step % self.steps_per_epoch == 0 or step == self.total_steps
                    if end_of_epoch and self.job.validation is not None:
                        self.validate_and_keep_best()
                    if step % self.cfg.checkpoint_every == 0 and step < self.total_steps:
                        self.save_state()  # the last step's state is the finished one (finish)
                    if end_of_epoch:
                        break
        return self.finish()

    def finish(self) -> TrainResult:
        weights, selected, step = self.model.state_dict(), "last", self.progress.step
        if self.cfg.select == "best" and self.job.validation is not None and self.best_path.exists():
            best = checkpoints.load(self.best_path, "best weights")
            weights, selected, step = best["state_dict"], "best", best["step"]
        self.save_state(finished=True)
        log.info("finished %d steps; the %s weights (step %d) are the result", self.total_steps, selected, step)
        return TrainResult(weights, selected, step, self.total_steps, self.progress.train_rows,
                           self.progress.val_rows)


def train(job: TrainingJob) -> TrainResult:
    per_step = job.config.batch_size * job.config.accumulation_steps
    if len(job.pairs) < per_step:
        raise TrainingError(f"{len(job.pairs)} training pairs, fewer than one step needs (train.batch_size x "
                            f"train.accumulation_steps = {per_step})")
    if job.config.batch_size % job.dist.world_size:
        raise TrainingError(f"train.batch_size={job.config.batch_size} must be divisible by the "
                            f"{job.dist.world_size} training processes")
    return _Run(job).run()
