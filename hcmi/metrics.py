"""Retrieval metrics: R@1/5/10, median and mean rank, both directions, multi-caption protocols, dual softmax.

numpy only. Conventions:
- `sim[t, v]` scores text t against video v (higher is better); `text_video[t]` is the column of text t's video.
- Ranks are 1-based and ties count against the target (a tie with k others ranks it k+1 places lower): a model that
  scores everything alike gets the worst rank, never a lucky one, and the result does not depend on the order of items.
- Text-to-video: every text is a query. Video-to-text: every video is a query; its rank is that of its best-ranked
  caption (the multi-caption protocol; with one caption per video this is the plain rank).
- NaN scores rank below everything, and so do -inf scores: a pair scored -inf (a text and a video of different
  galleries, hcmi/scoring.py) is left out of both directions' ranks.
"""

from __future__ import annotations

import numpy as np

ROW_BLOCK = 1024  # rows compared at once: bounds the temporary boolean matrix


def _clean(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(np.isnan(scores), -np.inf, scores)


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of column targets[q] within row q of scores, ties counting against it."""
    scores = _clean(scores)
    targets = np.asarray(targets, dtype=np.int64)
    ranks = np.empty(len(targets), dtype=np.int64)
    for start in range(0, len(targets), ROW_BLOCK):
        rows = scores[start : start + ROW_BLOCK]
        own = rows[np.arange(len(rows)), targets[start : start + ROW_BLOCK]]
        ranks[start : start + ROW_BLOCK] = (rows >= own[:, None]).sum(axis=1)
    return ranks


def summarize_ranks(ranks: np.ndarray) -> dict[str, float]:
    ranks = np.asarray(ranks)
    if len(ranks) == 0:
        return {"R1": float("nan"), "R5": float("nan"), "R10": float("nan"), "MdR": float("nan"),
                "MnR": float("nan"), "queries": 0}
    return {
        "R1": float(100.0 * np.mean(ranks <= 1)),
        "R5": float(100.0 * np.mean(ranks <= 5)),
        "R10": float(100.0 * np.mean(ranks <= 10)),
        "MdR": float(np.median(ranks)),
        "MnR": float(np.mean(ranks)),
        "queries": int(len(ranks)),
    }


def text_to_video_ranks(sim: np.ndarray, text_video: np.ndarray) -> np.ndarray:
    return target_ranks(sim, text_video)


def video_to_text_ranks(sim: np.ndarray, text_video: np.ndarray) -> np.ndarray:
    """Per video (that has captions): the best rank among its captions, ranking all texts for that video."""
    sim = _clean(sim)
    text_video = np.asarray(text_video, dtype=np.int64)
    n_videos = sim.shape[1]
    best = np.full(n_videos, np.iinfo(np.int64).max)
    columns = sim.T  # [videos, texts]
    for start in range(0, len(text_video), ROW_BLOCK):
        texts = np.arange(start, min(start + ROW_BLOCK, len(text_video)))
        videos = text_video[texts]
        own = sim[texts, videos]
        ranks = (columns[videos] >= own[:, None]).sum(axis=1)
        np.minimum.at(best, videos, ranks)
    return best[best != np.iinfo(np.int64).max]


def dual_softmax(sim: np.ndarray, temperature: float, axis: int) -> np.ndarray:
    """Dual-softmax re-scoring: sim times its softmax over `axis` (the other side's queries) at `temperature`.

    For text-to-video ranking the prior normalises each video's column over texts (axis=0); for video-to-text it
    normalises each text's row over videos (axis=1)."""
    sim = _clean(sim)
    logits = sim * temperature
    logits = logits - np.max(logits, axis=axis, keepdims=True)
    prior = np.exp(logits)
    prior /= prior.sum(axis=axis, keepdims=True)
    return _keep_excluded(sim, lambda: sim * prior)


def bank_dual_softmax(sim: np.ndarray, bank: np.ndarray, temperature: float) -> np.ndarray:
    """Text-to-video dual softmax whose prior does not look at the test queries: each video's column is normalised
    over a bank of other captions (e.g. training captions) instead of over the queries:
    S'[t, v] = S[t, v] * exp(T S[t, v]) / sum_b exp(T B[b, v]), with sim = S [queries, videos], bank = B [bank,
    videos]. A query's ranking then depends on nothing but its own scores and the bank."""
    sim, bank = _clean(sim), _clean(bank)
    shift = np.max(bank * temperature, axis=0, keepdims=True)
    normaliser = np.exp(bank * temperature - shift).sum(axis=0, keepdims=True)
    return _keep_excluded(sim, lambda: sim * np.exp(sim * temperature - shift) / normaliser)


def _keep_excluded(sim: np.ndarray, rescore) -> np.ndarray:
    """rescore(), with the pairs excluded from ranking (-inf: NaN, or another gallery's) kept at -inf rather than
    the NaN that -inf times a zero prior makes."""
    with np.errstate(invalid="ignore"):
        rescored = rescore()
    return np.where(np.isneginf(sim), -np.inf, rescored)


def retrieval_metrics(sim: np.ndarray, text_video: np.ndarray, dsl_temperature: float | None = None) -> dict:
    """{"t2v": ..., "v2t": ...} and, with a temperature, {"t2v_dsl": ..., "v2t_dsl": ...}."""
    out = {
        "t2v": summarize_ranks(text_to_video_ranks(sim, text_video)),
        "v2t": summarize_ranks(video_to_text_ranks(sim, text_video)),
    }
    if dsl_temperature is not None:
        out["t2v_dsl"] = summarize_ranks(text_to_video_ranks(dual_softmax(sim, dsl_temperature, 0), text_video))
        out["v2t_dsl"] = summarize_ranks(video_to_text_ranks(dual_softmax(sim, dsl_temperature, 1), text_video))
    return out


def twin_accuracy(sim: np.ndarray, text_video: np.ndarray, text_twin: np.ndarray) -> float:
    """Share of texts whose own video outscores its hard-distractor twin (ties count half); texts with no twin
    (text_twin < 0) are left out. Chance is 50%."""
    text_twin = np.asarray(text_twin, dtype=np.int64)
    keep = text_twin >= 0
    if not keep.any():
        return float("nan")
    rows = np.flatnonzero(keep)
    sim = _clean(sim)
    own = sim[rows, np.asarray(text_video)[rows]]
    twin = sim[rows, text_twin[rows]]
    return float(100.0 * np.mean((own > twin) + 0.5 * (own == twin)))

