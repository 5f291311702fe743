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

    @property
    def query_clusters(self) -> np.ndarray:
        """Per caption, the unit it was drawn with, whose queries stand or fall together: its twin pair where the
        split has them (group_id), else its video (the captions of one video)."""
        videos = self.captions["video_id"].astype(str)
        if "group_id" not in self.captions:
            return videos.to_numpy()
        groups = self.captions["group_id"]
        return groups.where(groups.notna(), videos).astype(str).to_numpy()

    def galleries(self, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(caption rows, video columns) of each of `folds` galleries: the clusters of the split, in the order of
        their videos, cut into `folds` contiguous blocks of as equal a number of clusters as can be (a cluster is
        never divided, so a twin stays in its twin's gallery). One fold: the whole split."""
        if folds == 1:
            return [(np.arange(len(self.captions)), np.arange(len(self.video_ids)))]
        clusters = self.query_clusters
        video_cluster = dict(zip(self.text_video.tolist(), clusters.tolist()))
        order = list(dict.fromkeys(video_cluster[v] for v in range(len(self.video_ids))))  # each video has a caption
        if not 1 <= folds <= len(order):
            raise ValueError(f"{folds} galleries asked of a split of {len(order)} clusters (twin pairs or videos)")
        fold_of = {cluster: i * folds // len(order) for i, cluster in enumerate(order)}
        text_fold = np.array([fold_of[c] for c in clusters], dtype=np.int64)
        video_fold = np.array([fold_of[video_cluster[v]] for v in range(len(self.video_ids))], dtype=np.int64)
        return [(np.flatnonzero(text_fold == f), np.flatnonzero(video_fold == f)) for f in range(folds)]

    def counts(self) -> dict:
        return {"videos": len(self.video_ids), "captions": int(len(self.captions)),
                "skipped_videos": len(self.missing_videos), "dropped_captions": int(self.dropped_captions)}
