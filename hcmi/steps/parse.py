"""`hcmi parse --dataset D`: the dataset's own annotation files -> data/raw/<dataset>/annotations.parquet."""

from __future__ import annotations

import logging

from hcmi.data.annotations import parse
from hcmi.files import write_table

log = logging.getLogger(__name__)


def run(params, layout, dataset: str):
    table = parse(dataset, layout.source(dataset))
    write_table(layout.annotations(dataset), table)
    counts = table.groupby("split").agg(videos=("video_id", "nunique"), captions=("caption_id", "size"))
    log.info("%s annotations -> %s\n%s", dataset, layout.annotations(dataset), counts.to_string())
    return table
