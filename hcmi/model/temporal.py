"""Temporal self-attention over frame embeddings (CLIP4Clip's seqTransf), residual onto the frame tokens."""

from __future__ import annotations

import torch
from torch import nn

MAX_FRAMES = 128  # learned temporal positions; longer inputs are an error, not silently truncated


class TemporalTransformer(nn.Module):
    def __init__(self, dim: int, layers: int, head_width: int = 64):
        super().__init__()
        heads = max(1, dim // head_width)
        self.positions = nn.Parameter(torch.randn(MAX_FRAMES, dim) * 0.01)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames [B, T, D], mask [B, T] (True = real frame) -> contextualised frames [B, T, D]."""
        t = frames.shape[1]
        if t > MAX_FRAMES:
            raise ValueError(f"{t} frames exceed the temporal transformer's {MAX_FRAMES} positions")
        x = frames + self.positions[:t].to(frames.dtype)
        update = self.encoder(x, src_key_padding_mask=~mask) - x  # the attention layers' contribution alone
        return frames + update
