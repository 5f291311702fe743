"""Two-stage text-to-video search: the coarse index proposes `depth` candidates per query by video-sentence score,
the full multi-level score re-ranks them, the best k are returned. Only the candidates' rows are read from the
store's mappings.

The scorer is the model's own `similarity(text_rep, video_rep) -> [n_texts, n_videos]`, passed in: this package
knows no model. It is called without gradients, on CPU tensors, floats in float32.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from hcmi.index.coarse import CoarseIndex
from hcmi.index.errors import VideoIndexError
from hcmi.index.store import VideoStore

Scorer = Callable[[dict, dict], torch.Tensor]
Hits = list[tuple[str, float]]

QUERY_KEY = "sentence"
BLOCK_ROWS = 2048  # videos scored per scorer call: bounds the scorer's working memory
BLOCK_QUERIES = 64  # queries per scorer call in exhaustive search


def search(text_rep: Mapping, store: VideoStore, coarse: CoarseIndex, scorer: Scorer, depth: int, k: int,
           query_key: str = QUERY_KEY) -> list[Hits]:
    """Per query (the first dimension of every text_rep value), the k best (video_id, score), best first; fewer
    when the coarse index finds fewer candidates. depth >= the number of videos scores every video (the exact
    result). depth 200 found 99% of the exact top 10 at 10k-100k videos in bench/search.py."""
    if k < 1 or depth < k:
        raise ValueError(f"search: need 1 <= k <= depth, got k={k}, depth={depth}")
    text = as_tensors(text_rep)
    if depth >= store.rows:
        return exhaustive_search(text, store, scorer, k)
    if coarse.store_uid != store.uid or coarse.rows != store.rows:
        raise VideoIndexError(f"{store.path}: the coarse index covers {coarse.rows} of {store.rows} videos (or "
                              "another store); update it with CoarseIndex.for_store after appending")
    _, candidates = coarse.search(text[query_key].numpy(), depth)
    hits = []
    for q, rows in enumerate(candidates):
        rows = np.unique(rows[rows >= 0])  # ascending: neighbouring rows share pages
        query = {key: value[q : q + 1] for key, value in text.items()}
        scores = np.concatenate([_score(scorer, query, store.read(rows[i : i + BLOCK_ROWS]))[0]
                                 for i in range(0, len(rows), BLOCK_ROWS)]) if len(rows) else np.empty(0)
        best = _top(scores[None], rows[None], k)
        hits.append(_named(store, *best, 0))
    return hits


def exhaustive_search(text_rep: Mapping, store: VideoStore, scorer: Scorer, k: int,
                      block_rows: int = BLOCK_ROWS, block_queries: int = BLOCK_QUERIES) -> list[Hits]:
    """The exact answer: every video scored, the store read once in blocks of rows for all queries."""
    text = as_tensors(text_rep)
    n_queries = len(next(iter(text.values())))
    best_scores = np.full((n_queries, 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((n_queries, 0), dtype=np.int64)
    for start in range(0, store.rows, block_rows):
        videos = store.read_range(start, start + block_rows)
        rows = np.arange(start, start + len(next(iter(videos.values()))), dtype=np.int64)
        scores = np.concatenate([_score(scorer, {key: v[q : q + block_queries] for key, v in text.items()}, videos)
                                 for q in range(0, n_queries, block_queries)])
        best_scores, best_rows = _top(np.concatenate([best_scores, scores], axis=1),
                                      np.concatenate([best_rows, np.broadcast_to(rows, scores.shape)], axis=1), k)
    return [_named(store, best_scores, best_rows, q) for q in range(n_queries)]


def recall_at_k(found: list[Hits], exact: list[Hits], k: int) -> float:
    """Mean over queries of the share of the exact top k that `found`'s top k contains."""
    shares = []
    for got, want in zip(found, exact, strict=True):
        want_ids = {video_id for video_id, _ in want[:k]}
        shares.append(len(want_ids & {video_id for video_id, _ in got[:k]}) / max(1, len(want_ids)))
    return float(np.mean(shares)) if shares else 1.0


def as_tensors(rep: Mapping) -> dict[str, torch.Tensor]:
    """CPU tensors, floats as float32 (what the scorer's gradient-free path expects)."""
    out = {}
    for key, value in rep.items():
        tensor = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
        out[key] = tensor.float() if tensor.is_floating_point() else tensor
    return out


def _score(scorer: Scorer, text: dict, videos: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return scorer(text, as_tensors(videos)).float().cpu().numpy()


def _top(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query row, the k best columns: highest score first, ties to the lower store row (deterministic)."""
    order = np.lexsort((rows, -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


def _named(store: VideoStore, scores: np.ndarray, rows: np.ndarray, q: int) -> Hits:
    return [(store.video_id(int(r)), float(s)) for r, s in zip(rows[q], scores[q])]
