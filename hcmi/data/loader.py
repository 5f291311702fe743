"""torch datasets over the frame cache: (frames, frame mask, tokens) for training, frames alone for encoding.

Training samples are addressed as (item, epoch): every view of an item draws its candidate frame per segment from
`draw_choice(seed, epoch, item, view, ...)`, a pure function, so the draws are the same whatever the number of loader
workers and after a resume. Evaluation always reads the fixed choice (the middle candidate).

Tokenisation is injected (a callable texts -> LongTensor) so the data layer never imports model code.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hcmi.data.frames import FrameCache

Tokenize = Callable[[Sequence[str]], torch.Tensor]


def draw_choice(seed: int, epoch: int, item: int, view: int, segments: int, candidates: int) -> np.ndarray:
    """int64 [segments]: the candidate frame of each segment for one view of one item in one epoch."""
    return np.random.default_rng([seed, epoch, item, view]).integers(0, candidates, size=segments)


def _mask(n_valid: int, segments: int) -> torch.Tensor:
    mask = torch.zeros(segments, dtype=torch.bool)
    mask[: max(1, n_valid)] = True
    return mask


class CaptionVideoPairs(Dataset):
    """Every (caption, video) pair of a split whose video is in the cache: one training sample each.

    `dataset[(item, epoch)]` is (frames uint8 [views, segments, H, W, 3], mask bool [segments], tokens [L], item);
    each view
    draws its own candidates (view numbers 0, 1, ...). `groups` (one id per pair, e.g. the synthetic benchmark's
    group_id) makes `batch_groups`: the units grouped batches keep together, one per (group, caption round) — the
    k-th captions of a family's videos travel together and a video's other captions travel with other rounds, so a
    grouped batch holds a family's members but not a video beside itself."""

    def __init__(self, cache: FrameCache, video_ids: Sequence[str], texts: Sequence[str], tokenize: Tokenize,
                 seed: int, views: int = 1, groups: Sequence[Hashable] | None = None,
                 contents: Sequence[Hashable] | None = None):
        if views < 1:
            raise ValueError(f"views must be at least 1, got {views}")
        keep = [i for i, v in enumerate(video_ids) if v in cache]
        self.cache, self.seed, self.views = cache, seed, views
        self.video_ids = [video_ids[i] for i in keep]
        self.texts = [texts[i] for i in keep]
        self.groups = None if groups is None else [groups[i] for i in keep]
        self.batch_groups = None if groups is None else list(zip(self.groups, caption_rounds(self.video_ids)))
        # what each pair's video shows, as small integers (equal for videos of the same content), where known
        self.contents = None if contents is None else list(pd.factorize(pd.Series([contents[i] for i in keep],
                                                                                  dtype=object))[0])
        self.dropped = len(video_ids) - len(keep)
        self.tokens = tokenize(self.texts) if self.texts else torch.zeros(0, 1, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.video_ids)

    def choices(self, item: int, epoch: int) -> list[np.ndarray]:
        """The candidate per segment of each view of `item` in `epoch`."""
        segments, candidates = self.cache.n_segments, self.cache.n_candidates
        return [draw_choice(self.seed, epoch, item, view, segments, candidates) for view in range(self.views)]

    def __getitem__(self, key: tuple[int, int]):
        item, epoch = key
        frames = np.empty((self.views, *self.cache.frame_shape), dtype=np.uint8)
        n_valid = 0
        for view, choice in enumerate(self.choices(item, epoch)):
            n_valid = self.cache.frames_into(frames[view], self.video_ids[item], choice)
        return torch.from_numpy(frames), _mask(n_valid, frames.shape[1]), self.tokens[item], item


def caption_rounds(video_ids: Sequence[str]) -> list[int]:
    """For each pair, how many earlier pairs have the same video: 0 for a video's first caption, 1 for its second."""
    seen: dict[str, int] = {}
    rounds = []
    for video in video_ids:
        rounds.append(seen.get(video, 0))
        seen[video] = rounds[-1] + 1
    return rounds


class CachedVideos(Dataset):
    """The videos of an evaluation: `dataset[i]` is (frames uint8 [segments, H, W, 3], mask) at the fixed choice."""

    def __init__(self, cache: FrameCache, video_ids: Sequence[str]):
        self.cache = cache
        self.video_ids = list(video_ids)

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, i: int):
        frames, n_valid = self.cache.frames(self.video_ids[i])
        return torch.from_numpy(frames), _mask(n_valid, frames.shape[0])


def epoch_order(n_items: int, seed: int, epoch: int, groups: Sequence[Hashable] | None = None) -> np.ndarray:
    """The items of one epoch in batch order, fixed by (seed, epoch). With `groups`, the groups come in a random
    order and each group's items stay together, in a random order of their own (items without a group id are
    groups of one); without, a plain permutation."""
    rng = np.random.default_rng([seed, epoch])
    if groups is None:
        return rng.permutation(n_items)
    if len(groups) != n_items:
        raise ValueError(f"{len(groups)} group ids for {n_items} items")
    codes, uniques = pd.factorize(pd.Series(list(groups), dtype=object), use_na_sentinel=True)
    singles = codes < 0
    codes[singles] = len(uniques) + np.arange(int(singles.sum()))
    group_rank = rng.permutation(int(codes.max(initial=-1)) + 1)
    within = rng.random(n_items)
    return np.lexsort((within, group_rank[codes]))


class EpochBatches(Sampler):
    """The batches of one epoch as lists of (item, epoch): the order of `epoch_order`, full batches only, optionally
    starting part-way (to resume exactly where an interrupted run stopped). Under DDP every rank draws the same global
    batches and keeps its own contiguous slice of each (rank order = order of the gathered embeddings)."""

    def __init__(self, n_items: int, batch_size: int, seed: int, epoch: int, start_batch: int = 0,
                 rank: int = 0, world_size: int = 1, groups: Sequence[Hashable] | None = None):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.n_items, self.batch_size, self.seed, self.epoch, self.start = n_items, batch_size, seed, epoch, start_batch
        self.rank, self.world_size, self.groups = rank, world_size, groups

    @staticmethod
    def batches_per_epoch(n_items: int, batch_size: int) -> int:
        return n_items // batch_size

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch(self.n_items, self.batch_size) - self.start)

    def __iter__(self):
        order = epoch_order(self.n_items, self.seed, self.epoch, self.groups)
        local = self.batch_size // self.world_size
        for b in range(self.start, self.batches_per_epoch(self.n_items, self.batch_size)):
            start = b * self.batch_size + self.rank * local
            yield [(int(item), self.epoch) for item in order[start : start + local]]


def epoch_loader(dataset: Dataset, batch_size: int, seed: int, epoch: int, start_batch: int = 0,
                 workers: int = 0, rank: int = 0, world_size: int = 1,
                 groups: Sequence[Hashable] | None = None) -> DataLoader:
    sampler = EpochBatches(len(dataset), batch_size, seed, epoch, start_batch, rank, world_size, groups)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=False,
                      pin_memory=torch.cuda.is_available())


def sequential_loader(dataset: Dataset, batch_size: int, workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
