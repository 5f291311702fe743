"""The scoring engine: encode every video and text once, score all pairs level by level in memory-bounded blocks,
combine the levels, and turn the scores into retrieval metrics. Training's validation, the evaluate step and search
use it alike.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hcmi import metrics
from hcmi.data.frames import FrameCache
from hcmi.data.loader import CachedVideos, sequential_loader
from hcmi.data.splits import RetrievalSplit
from hcmi.logs import progress
from hcmi.model.retrieval import RetrievalModel, concat_reps, slice_rep, take_rep
from hcmi.model.similarity import reused_pair_buffer


def _to_cpu(rep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Embeddings as float32 on the CPU (masks keep their dtype)."""
    return {k: (v.float() if v.is_floating_point() else v).cpu() for k, v in rep.items()}


@torch.no_grad()
def encode_videos(model: RetrievalModel, cache: FrameCache, video_ids, batch_size: int, device,
                  desc: str = "encode videos") -> dict[str, torch.Tensor]:
    reps = []
    loader = sequential_loader(CachedVideos(cache, video_ids), batch_size)
    for frames, mask in progress(loader, desc=desc, unit="batch"):
        rep = model.encode_video(frames.to(device, non_blocking=True), mask.to(device, non_blocking=True))
        reps.append(_to_cpu(rep))
    return concat_reps(reps)


@torch.no_grad()
def encode_texts(model: RetrievalModel, tokens: torch.Tensor, batch_size: int, device,
                 desc: str = "encode texts") -> dict[str, torch.Tensor]:
    reps = []
    for start in progress(range(0, len(tokens), batch_size), desc=desc, unit="batch"):
        rep = model.encode_text(tokens[start : start + batch_size].to(device))
        reps.append(_to_cpu(rep))
    return concat_reps(reps)


def _count(rep: dict[str, torch.Tensor]) -> int:
    return len(next(iter(rep.values())))


def block_sizes(model: RetrievalModel, text: dict, video: dict, memory_mb: float) -> tuple[int, int]:
    """Texts and videos per block so that one block's intermediate tensors stay within memory_mb (about square in
    pairs, bounded by the padded token counts: blocks of shorter items use less)."""
    n_t, n_v = _count(text), _count(video)
    per_pair = max(1, model.similarity_bytes_per_pair(text, video))
    pairs = max(1, int(memory_mb * 2**20 // per_pair))
    side = max(1, int(math.sqrt(pairs)))
    bv = min(n_v, max(side, pairs // max(1, n_t)))
    bt = min(n_t, max(1, pairs // max(1, bv)))
    return bt, bv


@torch.no_grad()
def level_similarity_matrices(model: RetrievalModel, text: dict, video: dict, memory_mb: float,
                              device=None) -> dict[str, np.ndarray]:
    """{level: float32 [n_texts, n_videos]}, computed block by block (peak memory set by memory_mb, not by N)."""
    device = device or torch.device("cpu")
    n_t, n_v = _count(text), _count(video)
    bt, bv = block_sizes(model, text, video, memory_mb)
    # the encoded split is small next to the pair tensors: it moves to the device once
    text = {k: v.to(device) for k, v in text.items()}
    video = {k: v.to(device) for k, v in video.items()}
    out = {level: np.empty((n_t, n_v), dtype=np.float32) for level in model.levels}
    with reused_pair_buffer():  # one pair buffer for every block, not a fresh allocation per block
        for t0 in range(0, n_t, bt):
            t_rep = slice_rep(text, t0, t0 + bt)
            for v0 in range(0, n_v, bv):
                for level, sim in model.level_similarities(t_rep, slice_rep(video, v0, v0 + bv)).items():
                    out[level][t0 : t0 + bt, v0 : v0 + bv] = sim.float().cpu().numpy()
    return out


def gallery_scores(model: RetrievalModel, text: dict, video: dict, galleries, memory_mb: float,
                   device=None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(level score matrices, final score matrix) [n_texts, n_videos] where each text is scored against the videos
    of its own gallery only (`galleries`: (text rows, video columns) of each, as RetrievalSplit.galleries gives them);
    a pair across galleries scores -inf, so it ranks below every candidate and metrics count it nowhere. One
    gallery: every pair."""
    if len(galleries) == 1:
        levels = level_similarity_matrices(model, text, video, memory_mb, device)
        return levels, model.combine(levels)
    n_t, n_v = _count(text), _count(video)
    levels = {level: np.full((n_t, n_v), -np.inf, dtype=np.float32) for level in model.levels}
    final = np.full((n_t, n_v), -np.inf, dtype=np.float32)
    for rows, columns in galleries:
        block = np.ix_(rows, columns)
        part = level_similarity_matrices(model, take_rep(text, rows), take_rep(video, columns), memory_mb, device)
        for level, sim in part.items():
            levels[level][block] = sim
        final[block] = model.combine(part)
    return levels, final


def encode_split(model: RetrievalModel, split: RetrievalSplit, cache: FrameCache, tokenize, batch_size: int,
                 device) -> tuple[dict, dict]:
    """(text representations, video representations) of a split, each encoded once."""
    model.eval()
    video = encode_videos(model, cache, split.video_ids, batch_size, device, desc=f"encode {len(split.video_ids)} "
                          "videos")
    text = encode_texts(model, tokenize(split.texts), batch_size, device, desc=f"encode {len(split.texts)} texts")
    return text, video


def score_split(model: RetrievalModel, split: RetrievalSplit, cache: FrameCache, tokenize, batch_size: int,
                memory_mb: float, device) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(level score matrices, final score matrix) of every caption of the split against every video."""
    text, video = encode_split(model, split, cache, tokenize, batch_size, device)
    levels = level_similarity_matrices(model, text, video, memory_mb, device)
    return levels, model.combine(levels)


def retrieval_results(split: RetrievalSplit, levels: dict[str, np.ndarray], final: np.ndarray,
                      dsl_temperature: float | None, bank: np.ndarray | None = None) -> dict:
    """Metrics of the final score (both directions, with DSL when a temperature is given, and text-to-video with
    the DSL prior over a bank of other captions when their scores `bank` [bank, videos] are given), of each level
    alone, and the accuracy on hard-distractor twins where the split defines them."""
    result = metrics.retrieval_metrics(final, split.text_video, dsl_temperature)
    if bank is not None and dsl_temperature is not None:
        rescored = metrics.bank_dual_softmax(final, bank, dsl_temperature)
        result["t2v_dsl_bank"] = metrics.summarize_ranks(metrics.text_to_video_ranks(rescored, split.text_video))
    if len(levels) > 1:
        result["levels"] = {level: metrics.retrieval_metrics(sim, split.text_video) for level, sim in levels.items()}
    if (split.text_twin >= 0).any():
        result["hard_distractors"] = _hard_distractors(split, levels, final)
    return result


def _hard_distractors(split: RetrievalSplit, levels: dict[str, np.ndarray], final: np.ndarray) -> dict:
    hard = {"accuracy": metrics.twin_accuracy(final, split.text_video, split.text_twin),
            "pairs": int((split.text_twin >= 0).sum())}
    kinds = split.captions.get("twin_kind")
    if kinds is not None:
        for kind in sorted(k for k in kinds.dropna().unique()):
            twin = np.where(kinds.to_numpy() == kind, split.text_twin, -1)
            hard[kind] = metrics.twin_accuracy(final, split.text_video, twin)
    if len(levels) > 1:
        hard["levels"] = {level: metrics.twin_accuracy(sim, split.text_video, split.text_twin)
                          for level, sim in levels.items()}
    return hard
