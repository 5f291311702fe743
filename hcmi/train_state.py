"""The resumable state of one training run (state/last.pt): the weights, optimizer, schedule, random generators and
where the loop stands, written atomically at checkpoints and read back only when it belongs to the same run (the
same fingerprint: parameters, data and code) and is unfinished. A run resumed from it goes on bit for bit."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from hcmi import checkpoints

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where the loop stands, besides the weights and the optimizer."""

    step: int = 0
    best_score: float = -math.inf
    train_rows: list = field(default_factory=list)
    val_rows: list = field(default_factory=list)


def save(path: Path, fingerprint: str, progress: Progress, model, optimizer, scheduler, finished: bool = False) -> None:
    checkpoints.save(path, {
        "fingerprint": fingerprint, "finished": finished, "step": progress.step,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": checkpoints.rng_state(), "best_score": progress.best_score, "train_rows": progress.train_rows,
        "val_rows": progress.val_rows})


def restore(path: Path, fingerprint: str, model, optimizer, scheduler) -> Progress | None:
    """Load the state at `path` into the model, optimizer, schedule and random generators, and return its progress,
    when it is this run's unfinished state; otherwise (missing, unreadable, another run's, finished) None, with the
    reason logged, and nothing loaded."""
    if not path.exists():
        return None
    try:
        state = checkpoints.load(path, "training state")
    except checkpoints.CheckpointError as exc:  # an unusable state is reported and replaced, never trusted
        log.warning("%s; starting a fresh run", exc)
        return None
    if state["fingerprint"] != fingerprint:
        log.info("%s belongs to another configuration or code: starting a fresh run", path)
        return None
    if state["finished"]:
        log.info("%s is a finished run: training again from scratch", path)
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    checkpoints.set_rng_state(state["rng"])
    return Progress(state["step"], state["best_score"], state["train_rows"], state["val_rows"])


def saved_step(path: Path) -> int | str:
    """The step of the state at `path`, for messages."""
    if not path.exists():
        return "none written yet"
    return checkpoints.load(path, "training state")["step"]
