"""Parsers: each dataset's own annotation files -> one table (video_id, caption_id, text, split).

Optional columns: `twin_id`, `twin_kind` (the hard distractor of a video, for the synthetic benchmark). No torch here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from hcmi.errors import HcmiError

COLUMNS = ["video_id", "caption_id", "text", "split"]


class AnnotationError(HcmiError, ValueError):
    """An annotation file is missing or malformed; the message names the file and the problem."""


def _load_json(path: Path):
    if not path.exists():
        raise AnnotationError(f"{path}: annotation file not found")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from None


def parse_synthetic(source_dir: Path) -> pd.DataFrame:
    path = Path(source_dir) / "captions.json"
    data = _load_json(path)
    rows = []
    try:
        for video in data["videos"]:
            for k, text in enumerate(video["captions"]):
                rows.append((video["video_id"], f"{video['video_id']}#{k}", text, video["split"],
                             video.get("twin_id"), video.get("twin_kind")))
    except (KeyError, TypeError) as exc:
        raise AnnotationError(f"{path}: unexpected structure ({exc!r})") from None
    return pd.DataFrame(rows, columns=COLUMNS + ["twin_id", "twin_kind"])


PARSERS = {"synthetic": parse_synthetic}


def parse(dataset: str, source_dir: Path) -> pd.DataFrame:
    table = PARSERS[dataset](Path(source_dir))
    check(table, f"{dataset} annotations")
    return table


def check(table: pd.DataFrame, what: str) -> None:
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise AnnotationError(f"{what}: missing columns {missing}")
    if table["caption_id"].duplicated().any():
        dup = table.loc[table["caption_id"].duplicated(), "caption_id"].iloc[0]
        raise AnnotationError(f"{what}: duplicate caption_id '{dup}'")
    empty = table["text"].str.strip().eq("")
    if empty.any():
        raise AnnotationError(f"{what}: empty caption text for {table.loc[empty, 'caption_id'].iloc[0]}")


def split_table(table: pd.DataFrame, split: str) -> pd.DataFrame:
    return table[table["split"] == split].reset_index(drop=True)
