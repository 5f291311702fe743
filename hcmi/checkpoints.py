"""Checkpoints and training state that load without running code.

model.pt, state/last.pt and state/best.pt travel through shared DVC remotes, so whoever can write to a remote must
not be able to run code on a collaborator's machine. They hold only tensors and plain values (dicts, lists, strings,
numbers; RNG states converted to tensors) and are loaded with `torch.load(..., weights_only=True)`, whose unpickler
refuses anything else. A file that needs arbitrary unpickling is refused with an error that names it.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from hcmi.errors import HcmiError
from hcmi.files import atomic_path

FORMAT = 3  # 3: loadable with weights_only (format 2 stored numpy and Python RNG states as pickled objects)


class CheckpointError(HcmiError, RuntimeError):
    """A checkpoint is missing, unreadable, unsafe to load or of an older format; the message names the file."""


def save(path: Path, content: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **content}, tmp)


def load(path: Path, what: str = "checkpoint", remedy: str = "") -> dict:
    """The content of a file written by `save`; `what` and `remedy` make the errors say what it is and what to do."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: {what} not found" + (f"; {remedy}" if remedy else ""))
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refusing to load this {what}: it does not load as plain tensors and values ({detail}). "
            f"It was written by an older hcmi (before checkpoint format {FORMAT}) or by something else; loading it "
            f"would need arbitrary unpickling, which can run code." + (f" {remedy}" if remedy else "")) from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise CheckpointError(f"{path}: {what} of format {found}, this hcmi reads format {FORMAT}"
                              + (f"; {remedy}" if remedy else ""))
    return content


def rng_state() -> dict:
    """Every random number generator training touches, as tensors and plain values."""
    _, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gauss": float(cached_gauss)},
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss": gauss},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"],
                         numpy["cached_gauss"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
