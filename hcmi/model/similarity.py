"""Similarities between a block of texts and a block of videos, at one level each. Inputs are L2-normalised.

  cosine    one token per side (video-sentence)
  max_mean  token-wise interaction (clip-phrase, frame-word): each text token takes its best-matching video token,
            averaged over the text's tokens; the same from the video side; the two directions averaged.
            Padding tokens never match and never count in a mean.

max_mean computes every token pair of every item pair with ONE matmul ([Nt*Lt, D] x [D, Nv*Lv]) and then only
reduces that result. Without gradients (evaluation) the padding masks are applied in place, so the pair tensor is
the only large intermediate: memory per (text, video) pair is 4*Lt*Lv bytes plus the two reduced tensors. Inside
`reused_pair_buffer()` (block-by-block evaluation) that pair tensor is written into one buffer kept from block to
block: a fresh allocation of hundreds of MB per block costs page faults on CPU, about a fifth of the matmul's time.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch

# the evaluation engine's reusable pair buffer: None outside reused_pair_buffer(), else a one-slot holder
_PAIR_BUFFER: ContextVar[dict | None] = ContextVar("hcmi_pair_buffer", default=None)

PAD_SCORE = -1.0e4  # below any cosine similarity: a padding token can never be the best match


def cosine(text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """[Nt, D] x [Nv, D] -> [Nt, Nv]."""
    return text @ video.T


@contextmanager
def reused_pair_buffer():
    """Within this block, gradient-free max_mean calls share one pair buffer (grown when a call needs more) instead of
    allocating their pair tensor afresh; it is released on exit."""
    token = _PAIR_BUFFER.set({})
    try:
        yield
    finally:
        _PAIR_BUFFER.reset(token)


def _pair_tensor(text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """[Nt*Lt, D] x [Nv*Lv, D] -> [Nt*Lt, Nv*Lv] float32, in the shared buffer when one is active."""
    holder = _PAIR_BUFFER.get()
    if holder is None or torch.is_grad_enabled() or text.dtype != torch.float32:
        return (text @ video.T).float()
    numel = len(text) * len(video)
    buffer = holder.get("buffer")
    if buffer is None or buffer.numel() < numel or buffer.device != text.device:
        holder.pop("buffer", None)  # free the old one before allocating the larger one
        buffer = holder["buffer"] = torch.empty(numel, dtype=torch.float32, device=text.device)
    return torch.matmul(text, video.T, out=buffer[:numel].view(len(text), len(video)))


def _masked_mean(values: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    return (values * weights).sum(dim) / weights.sum(dim).clamp(min=1.0)


def max_mean(text: torch.Tensor, text_mask: torch.Tensor, video: torch.Tensor,
             video_mask: torch.Tensor) -> torch.Tensor:
    """[Nt, Lt, D] (mask [Nt, Lt]) x [Nv, Lv, D] (mask [Nv, Lv]) -> [Nt, Nv]."""
    nt, lt, d = text.shape
    nv, lv, _ = video.shape
    sims = _pair_tensor(text.reshape(nt * lt, d), video.reshape(nv * lv, d)).reshape(nt, lt, nv, lv)
    video_pad = (~video_mask).float().mul(PAD_SCORE)[None, None]  # [1, 1, Nv, Lv]
    text_pad = (~text_mask).float().mul(PAD_SCORE)[:, :, None, None]  # [Nt, Lt, 1, 1]
    if torch.is_grad_enabled():  # training: out of place, autograd needs the unmasked tensor
        text_best = (sims + video_pad).amax(dim=3)
        video_best = (sims + text_pad).amax(dim=1)
    else:  # evaluation: in place, no second copy of the pair tensor
        sims.add_(video_pad)
        text_best = sims.amax(dim=3)  # [Nt, Lt, Nv]; rows of padded text tokens are ignored by the mean below
        sims.add_(text_pad)
        video_best = sims.amax(dim=1)  # [Nt, Nv, Lv]; padded video columns are ignored by the mean below
    text_side = _masked_mean(text_best, text_mask.float()[:, :, None], dim=1)  # [Nt, Nv]
    video_side = _masked_mean(video_best, video_mask.float()[None], dim=2)  # [Nt, Nv]
    return 0.5 * (text_side + video_side)


def max_mean_bytes_per_pair(text_tokens: int, video_tokens: int) -> int:
    """Peak intermediate memory of max_mean (evaluation) per (text, video) pair: the pair tensor and the two
    reduced tensors, in float32."""
    return 4 * (text_tokens * video_tokens + text_tokens + video_tokens + 4)
