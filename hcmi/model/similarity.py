"""Similarities between a block of texts and a block of videos, at one level each. Inputs are L2-normalised.

  cosine    one token per side (video-sentence)
  max_mean  token-wise interaction (clip-phrase, frame-word): each text token takes its best-matching video token,
            averaged over the text's tokens; the same from the video side; the two directions averaged.
            Padding tokens never match and never count in a mean.

max_mean computes every token pair of every item pair with ONE matmul and then only reduces that result.
In training (gradients) the tensors stay padded ([Nt*Lt, D] x [D, Nv*Lv]) and the masks are applied out of place.
Without gradients (evaluation) only valid tokens enter the matmul: the block's valid tokens are packed, items ordered
by token count (video counts rounded up to a few lengths by repeating the video's own tokens), and the reductions
run over runs of items of equal count, on 64-byte aligned rows. Padding costs neither FLOPs nor memory
(captions far shorter than the text context, as in MSR-VTT, cost accordingly less), the pair tensor is the only large
intermediate (at most 4*Lt*Lv bytes per item pair, plus the two reduced tensors), and inside `reused_pair_buffer()`
(block-by-block evaluation) it is written into one buffer kept from block to block: a fresh allocation of hundreds of
MB per block costs page faults on CPU, about a fifth of the matmul's time.
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


VIDEO_RUNS = 8  # video token counts are rounded so that a block has at most about this many runs (_max_mean_packed)


class _Packed:
    """The valid tokens of a block of items, packed without padding: items ordered by token count, then each item's
    tokens one after another ([rows, D]). With step > 1 each item's count is rounded up to a multiple of `step` by
    repeating its own tokens (a repeat never changes a max; `real` marks the originals for the means), so there are
    at most L/step runs of items with equal (rounded) length. `runs`: (first item, items, length, first row)."""

    def __init__(self, tokens: torch.Tensor, mask: torch.Tensor, step: int = 1, align: int = 1):
        counts = mask.sum(dim=1)
        self.order = torch.sort(counts, stable=True).indices  # packed position -> item
        counts = counts[self.order]
        lengths = -(-counts // step) * step
        # per item: its valid positions first (in order), then position j of the rounded length reads valid j % count
        valid_first = torch.argsort((~mask[self.order]).to(torch.uint8), dim=1, stable=True)
        width = max(1, int(lengths.max())) if len(lengths) else 1
        j = torch.arange(width, device=mask.device)[None]
        source = valid_first.gather(1, j % counts.clamp(min=1)[:, None])  # j % count < count <= L
        keep = j < lengths[:, None]
        flat = (self.order[:, None] * mask.shape[1] + source)[keep]  # rows of tokens.reshape(-1, D) to take
        self.tokens = tokens.reshape(-1, tokens.shape[-1]).index_select(0, flat)  # [rows, D]
        self.real = (j < counts[:, None])[keep]  # [rows]: an original token, not a repeat
        self.counts = counts  # per packed item
        self.rows = len(self.tokens)
        pad = -self.rows % align  # zero rows after the last item: the row count a multiple of `align`
        if pad:
            self.tokens = torch.cat([self.tokens, self.tokens.new_zeros(pad, self.tokens.shape[1])])
        self.runs = []
        item = row = 0
        for length, size in zip(*(x.tolist() for x in torch.unique_consecutive(lengths, return_counts=True))):
            self.runs.append((item, size, length, row))
            item, row = item + size, row + size * length

    def mean(self, best: torch.Tensor, item: int, size: int, length: int, row: int, dim: int) -> torch.Tensor:
        """Mean over the original tokens of a run's items: `best` holds one value per packed row along `dim`
        (dim 0: [rows, n]; dim 1: [n, rows]) -> [size, n] or [n, size]."""
        real = self.real[row : row + size * length].view(size, length).float()
        count = self.counts[item : item + size].clamp(min=1).float()
        if dim == 0:
            values = best[row : row + size * length].view(size, length, -1)
            return (values * real[:, :, None]).sum(1) / count[:, None]
        values = best[:, row : row + size * length].view(len(best), size, length)
        return (values * real[None]).sum(2) / count[None]

    def restore(self, values: torch.Tensor, dim: int) -> torch.Tensor:
        """Values indexed by packed item along `dim` -> indexed by input item."""
        return values.index_select(dim, torch.argsort(self.order))


def _max_mean_packed(text: torch.Tensor, text_mask: torch.Tensor, video: torch.Tensor, video_mask: torch.Tensor,
                     video_step: int | None = None) -> torch.Tensor:
    """max_mean without gradients and without padding: one matmul of every valid text token against every valid
    video token, then max-then-mean reductions over runs of items of equal length. Text tokens are packed exactly
    (their runs are row slabs, cheap to reduce whatever their number); video token counts are rounded up to a
    multiple of `video_step` (default: the padded length / VIDEO_RUNS) by repeating each video's own tokens, so that
    the per-video max runs over a few wide column slabs rather than one narrow slab per distinct length (measured ~3x
    slower on CPU). Items without any valid token score 0 on their own side and PAD_SCORE on the other."""
    t = _Packed(text, text_mask)
    video_step = video_step or max(1, video.shape[1] // VIDEO_RUNS)
    v = _Packed(video, video_mask, step=video_step, align=16)  # 16 floats per row: 64-byte aligned rows
    nt, nv = len(text), len(video)
    pairs = _pair_tensor(t.tokens, v.tokens)  # [text tokens, video tokens (+ zero columns up to a multiple of 16)]
    text_best = pairs.new_full((t.rows, nv), PAD_SCORE)  # each text token's best token in each video
    video_best = pairs.new_full((nt, v.rows), PAD_SCORE)  # each video token's best token in each text
    for item, size, length, row in v.runs:
        if length:
            text_best[:, item : item + size] = pairs[:, row : row + size * length].view(t.rows, size, length).amax(2)
    for item, size, length, row in t.runs:
        if length:
            video_best[item : item + size] = pairs[row : row + size * length, : v.rows].view(
                size, length, v.rows).amax(1)
    text_side, video_side = pairs.new_zeros((nt, nv)), pairs.new_zeros((nt, nv))
    for item, size, length, row in t.runs:
        text_side[item : item + size] = t.mean(text_best, item, size, length, row, dim=0)
    for item, size, length, row in v.runs:
        video_side[:, item : item + size] = v.mean(video_best, item, size, length, row, dim=1)
    both = 0.5 * (text_side + video_side)  # [texts, videos], both in packed order
    return v.restore(t.restore(both, 0), 1)


def max_mean(text: torch.Tensor, text_mask: torch.Tensor, video: torch.Tensor,
             video_mask: torch.Tensor) -> torch.Tensor:
    """[Nt, Lt, D] (mask [Nt, Lt]) x [Nv, Lv, D] (mask [Nv, Lv]) -> [Nt, Nv]."""
    if not torch.is_grad_enabled():
        return _max_mean_packed(text, text_mask, video, video_mask)
    # training: every token pair of every item pair at once, padding masked out of place (autograd needs it)
    nt, lt, d = text.shape
    nv, lv, _ = video.shape
    sims = _pair_tensor(text.reshape(nt * lt, d), video.reshape(nv * lv, d)).reshape(nt, lt, nv, lv)
    video_pad = (~video_mask).float().mul(PAD_SCORE)[None, None]  # [1, 1, Nv, Lv]
    text_pad = (~text_mask).float().mul(PAD_SCORE)[:, :, None, None]  # [Nt, Lt, 1, 1]
    text_best = (sims + video_pad).amax(dim=3)  # [Nt, Lt, Nv]; rows of padded text tokens are ignored below
    video_best = (sims + text_pad).amax(dim=1)  # [Nt, Nv, Lv]; padded video columns are ignored below
    text_side = _masked_mean(text_best, text_mask.float()[:, :, None], dim=1)  # [Nt, Nv]
    video_side = _masked_mean(video_best, video_mask.float()[None], dim=2)  # [Nt, Nv]
    return 0.5 * (text_side + video_side)


def max_mean_bytes_per_pair(text_tokens: int, video_tokens: int) -> int:
    """Peak intermediate memory of max_mean (evaluation) per (text, video) pair: the pair tensor and the two
    reduced tensors, in float32."""
    return 4 * (text_tokens * video_tokens + text_tokens + video_tokens + 4)
