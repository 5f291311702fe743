"""torch datasets over the frame cache: (frames, frame mask, tokens) for training, frames alone for encoding.

Tokenisation is injected (a callable texts -> LongTensor) so the data layer never imports model code.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hcmi.data.frames import FrameCache

Tokenize = Callable[[Sequence[str]], torch.Tensor]


def _frames_item(cache: FrameCache, video_id: str) -> tuple[torch.Tensor, torch.Tensor]:
    frames, n_valid = cache.frames(video_id)
    mask = torch.zeros(frames.shape[0], dtype=torch.bool)
    mask[: max(1, n_valid)] = True
    return torch.from_numpy(np.array(frames)), mask


class CaptionVideoPairs(Dataset):
    """Every (caption, video) pair of a split whose video is in the cache: one training sample each."""

    def __init__(self, cache: FrameCache, video_ids: Sequence[str], texts: Sequence[str], tokenize: Tokenize):
        keep = [i for i, v in enumerate(video_ids) if v in cache]
        self.cache = cache
        self.video_ids = [video_ids[i] for i in keep]
        self.texts = [texts[i] for i in keep]
        self.dropped = len(video_ids) - len(keep)
        self.tokens = tokenize(self.texts) if self.texts else torch.zeros(0, 1, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, i: int):
        frames, mask = _frames_item(self.cache, self.video_ids[i])
        return frames, mask, self.tokens[i]


class CachedVideos(Dataset):
    def __init__(self, cache: FrameCache, video_ids: Sequence[str]):
        self.cache = cache
        self.video_ids = list(video_ids)

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, i: int):
        return _frames_item(self.cache, self.video_ids[i])


class EpochBatches(Sampler):
    """The batches of one epoch: a permutation fixed by (seed, epoch), full batches only, optionally starting
    part-way (to resume exactly where an interrupted run stopped). Under DDP every rank draws the same global
    batches and keeps its own contiguous slice of each (rank order = order of the gathered embeddings)."""

    def __init__(self, n_items: int, batch_size: int, seed: int, epoch: int, start_batch: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.n_items, self.batch_size, self.seed, self.epoch, self.start = n_items, batch_size, seed, epoch, start_batch
        self.rank, self.world_size = rank, world_size

    @staticmethod
    def batches_per_epoch(n_items: int, batch_size: int) -> int:
        return n_items // batch_size

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch(self.n_items, self.batch_size) - self.start)

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_items)
        local = self.batch_size // self.world_size
        for b in range(self.start, self.batches_per_epoch(self.n_items, self.batch_size)):
            start = b * self.batch_size + self.rank * local
            yield order[start : start + local].tolist()


def epoch_loader(dataset: Dataset, batch_size: int, seed: int, epoch: int, start_batch: int = 0,
                 workers: int = 0, rank: int = 0, world_size: int = 1) -> DataLoader:
    sampler = EpochBatches(len(dataset), batch_size, seed, epoch, start_batch, rank, world_size)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=False,
                      pin_memory=torch.cuda.is_available())


def sequential_loader(dataset: Dataset, batch_size: int, workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
