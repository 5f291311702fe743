"""Similarities between a block of texts and a block of videos, at one level each. Inputs are L2-normalised.

  cosine    one token per side (video-sentence)
  max_mean  token-wise interaction (clip-phrase, frame-word): each text token takes its best-matching video token,
            averaged over the text's tokens; the same from the video side; the two directions averaged.
            Padding tokens never match and never count in a mean.
"""

from __future__ import annotations

import torch


def cosine(text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """[Nt, D] x [Nv, D] -> [Nt, Nv]."""
    return text @ video.T


def max_mean(text: torch.Tensor, text_mask: torch.Tensor, video: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """[Nt, Lt, D] (mask [Nt, Lt]) x [Nv, Lv, D] (mask [Nv, Lv]) -> [Nt, Nv]."""
    nt, lt, d = text.shape
    nv, lv, _ = video.shape
    # all token pairs of all item pairs in one matmul: [Nt*Lt, D] @ [D, Nv*Lv]
    sims = (text.reshape(nt * lt, d) @ video.reshape(nv * lv, d).T).reshape(nt, lt, nv, lv).float()
    neg = torch.finfo(sims.dtype).min
    t_mask = text_mask[:, :, None, None]
    v_mask = video_mask[None, None, :, :]
    text_best = sims.masked_fill(~v_mask, neg).amax(dim=3)  # [Nt, Lt, Nv]
    video_best = sims.masked_fill(~t_mask, neg).amax(dim=1)  # [Nt, Nv, Lv]
    t_weight = text_mask.float()
    v_weight = video_mask.float()
    text_side = (text_best * t_weight[:, :, None]).sum(1) / t_weight.sum(1, keepdim=True).clamp(min=1.0)
    video_side = (video_best * v_weight[None]).sum(2) / v_weight.sum(1)[None].clamp(min=1.0)
    return 0.5 * (text_side + video_side)


def max_mean_bytes_per_pair(text_tokens: int, video_tokens: int) -> int:
    """Peak intermediate memory of max_mean per (text, video) pair: the pair matrix and its two masked copies."""
    return 4 * 3 * text_tokens * video_tokens + 4 * 2 * (text_tokens + video_tokens)
