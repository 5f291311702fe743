"""The interface every retrieval model offers.

A model encodes videos and texts once into dicts of tensors (first dimension = items), and scores any block of
texts against any block of videos level by level; the final score is a weighted sum of the levels. Evaluation relies
on exactly this to compute an N x M similarity in memory-bounded blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from hcmi.model.backbone import Backbone


class RetrievalModel(nn.Module):
    levels: tuple[str, ...] = ()

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.backbone.logit_scale

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor, tokens: torch.Tensor) -> tuple[dict, dict]:
        """Both encoders at once (the call DDP wraps): (video representation, text representation)."""
        return self.encode_video(frames, frame_mask), self.encode_text(tokens)

    def encode_video(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode_text(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def level_similarities(self, text: dict, video: dict) -> dict[str, torch.Tensor]:
        """{level: [n_texts, n_videos]} cosine-scale similarities."""
        raise NotImplementedError

    def level_weights(self) -> dict[str, float]:
        return {level: 1.0 for level in self.levels}

    def combine(self, sims: dict):
        """The final score: the level scores' weighted mean (torch tensors or numpy arrays alike)."""
        return combine_levels(self.level_weights(), sims)

    def similarity(self, text: dict, video: dict) -> torch.Tensor:
        return self.combine(self.level_similarities(text, video))

    def similarity_bytes_per_pair(self, text: dict, video: dict) -> int:
        """Peak bytes of intermediate tensors per (text, video) pair in level_similarities (for block sizing)."""
        return 4 * (len(self.levels) + 1)


def slice_rep(rep: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {key: value[start:stop] for key, value in rep.items()}


def take_rep(rep: dict[str, torch.Tensor], rows) -> dict[str, torch.Tensor]:
    """The items at `rows` (indices, in that order) of a representation."""
    index = torch.as_tensor(rows, dtype=torch.long)
    return {key: value.index_select(0, index.to(value.device)) for key, value in rep.items()}


def concat_reps(reps: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.cat([r[key] for r in reps]) for key in reps[0]}


def combine_levels(weights: dict[str, float], sims: dict):
    """Weighted mean of the level scores present in `sims`."""
    total = sum(weights[level] for level in sims)
    return sum(weights[level] * sim for level, sim in sims.items()) / total
