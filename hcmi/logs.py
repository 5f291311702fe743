"""Logging and progress bars for long steps, readable both in a terminal and in a rule's log file."""

from __future__ import annotations

import logging
import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    # open_clip warns on every randomly initialised model; the training log says what was loaded instead
    logging.getLogger("root").setLevel(logging.INFO)


def progress(iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
    """A tqdm bar on stderr; in a log file (no terminal) it updates rarely so logs stay short."""
    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.2 if interactive else 15.0)
    kwargs.setdefault("dynamic_ncols", interactive)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, **kwargs)
