"""A retrieval split: the queries (captions) of one split and the videos they are ranked against."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hcmi.data.annotations import split_table
from hcmi.data.frames import FrameCache


class RetrievalSplit:
    """The captions of a split whose videos are in the frame cache, each pointing at its video's column.

    `text_video[t]`: the column of caption t's video; `text_twin[t]`: the column of its video's hard-distractor twin
    (-1 where the dataset defines none)."""

    def __init__(self, annotations: pd.DataFrame, cache: FrameCache, split: str):
        table = split_table(annotations, split)
        videos = list(dict.fromkeys(table["video_id"]))
        self.video_ids = [v for v in videos if v in cache]
        self.missing_videos = [v for v in videos if v not in cache]
        column = {v: i for i, v in enumerate(self.video_ids)}
        kept = table[table["video_id"].isin(column)].reset_index(drop=True)
        self.captions = kept
        self.text_video = kept["video_id"].map(column).to_numpy()
        self.dropped_captions = len(table) - len(kept)
        self.text_twin = np.full(len(kept), -1, dtype=np.int64)
        if "twin_id" in kept.columns:
            twins = kept["twin_id"].map(lambda v: column.get(v, -1) if isinstance(v, str) else -1)
            self.text_twin = twins.to_numpy(dtype=np.int64)

    @property
    def texts(self) -> list[str]:
        return list(self.captions["text"])

    def counts(self) -> dict:
        return {"videos": len(self.video_ids), "captions": int(len(self.captions)),
                "skipped_videos": len(self.missing_videos), "dropped_captions": int(self.dropped_captions)}
