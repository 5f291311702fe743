"""`hcmi sample --dataset D --split S`: decord samples every video of a split into the frame cache."""

from __future__ import annotations

import logging

from hcmi.data import videos
from hcmi.data.annotations import read_annotations, split_table
from hcmi.data.frames import Sampling, sample_split
from hcmi.logs import progress
from hcmi.steps.common import scheduled_workers

log = logging.getLogger(__name__)


def sampling(params, dataset: str) -> Sampling:
    frames = params.frames
    return Sampling(max_frames=params.dataset(dataset).max_frames, image_size=frames.image_size,
                    candidates=frames.candidates, jpeg_quality=frames.jpeg_quality)


def run(params, layout, dataset: str, split: str):
    table = split_table(read_annotations(layout.annotations(dataset), dataset), split)
    if table.empty:
        log.info("%s has no '%s' split in its protocol: writing an empty frame cache", dataset, split)
    pairs, missing = videos.match(list(dict.fromkeys(table["video_id"])), layout.videos(dataset))
    if missing:
        log.warning("%d annotated videos have no file in %s (listed in skipped.csv)", len(missing),
                    layout.videos(dataset))
    frames = params.frames
    index = sample_split(pairs, layout.frames(dataset, split), sampling(params, dataset), frames.shard_size,
                         frames.max_skip_fraction, workers=scheduled_workers(), progress=progress)
    log.info("%s/%s: %d videos cached in %s", dataset, split, len(index), layout.frames(dataset, split))
    return index
