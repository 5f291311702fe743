"""Evaluation: encode every test video and caption once, score all pairs in memory-bounded blocks, compute metrics.

Writes metrics.json (t2v and v2t R@1/5/10, MdR, MnR, with and without dual softmax, per level, hard-distractor
accuracy where the dataset defines twins, counts) and rankings.parquet (top-k videos per text query, for reports).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hcmi import metrics
from hcmi.data.annotations import split_table
from hcmi.data.frames import FrameCache
from hcmi.data.loader import CachedVideos, sequential_loader
from hcmi.files import write_json, write_table
from hcmi.logs import progress
from hcmi.model.retrieval import RetrievalModel, concat_reps, slice_rep
from hcmi.model.similarity import reused_pair_buffer

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


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


def block_sizes(model: RetrievalModel, text: dict, video: dict, memory_mb: float) -> tuple[int, int]:
    """Texts and videos per block so that one block's intermediate tensors stay within memory_mb (about square in
    pairs, bounded by the padded token counts: blocks of shorter items use less)."""
    n_t, n_v = len(next(iter(text.values()))), len(next(iter(video.values())))
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
    n_t, n_v = len(next(iter(text.values()))), len(next(iter(video.values())))
    bt, bv = block_sizes(model, text, video, memory_mb)
    # the encoded test set is small next to the pair tensors: it moves to the device once
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


def combine_levels(model: RetrievalModel, levels: dict[str, np.ndarray]) -> np.ndarray:
    weights = model.level_weights()
    total = sum(weights[level] for level in levels)
    return sum(weights[level] * sim for level, sim in levels.items()) / total


class TestSet:
    """The evaluation split of a dataset, restricted to videos present in the frame cache."""

    def __init__(self, annotations: pd.DataFrame, cache: FrameCache, split: str):
        table = split_table(annotations, split)
        videos = list(dict.fromkeys(table["video_id"]))
        self.video_ids = [v for v in videos if v in cache]
        self.missing_videos = [v for v in videos if v not in cache]
        column = {v: i for i, v in enumerate(self.video_ids)}
        kept = table[table["video_id"].isin(column)].reset_index(drop=True)
        self.captions = kept
        self.text_video = kept["video_id"].map(column).to_numpy()
        self.dropped_captions = len(table) - len(kept)
        if "twin_id" in kept.columns:
            self.text_twin = kept["twin_id"].map(lambda v: column.get(v, -1) if isinstance(v, str) else -1)
            self.text_twin = self.text_twin.to_numpy(dtype=np.int64)
        else:
            self.text_twin = np.full(len(kept), -1, dtype=np.int64)


def evaluate_matrices(test: TestSet, levels: dict[str, np.ndarray], final: np.ndarray,
                      dsl_temperature: float | None) -> dict:
    result = metrics.retrieval_metrics(final, test.text_video, dsl_temperature)
    if len(levels) > 1:
        result["levels"] = {level: metrics.retrieval_metrics(sim, test.text_video) for level, sim in levels.items()}
    if (test.text_twin >= 0).any():
        kinds = test.captions.get("twin_kind")
        hard = {"accuracy": metrics.twin_accuracy(final, test.text_video, test.text_twin),
                "pairs": int((test.text_twin >= 0).sum())}
        if kinds is not None:
            for kind in sorted(k for k in kinds.dropna().unique()):
                twin = np.where(kinds.to_numpy() == kind, test.text_twin, -1)
                hard[kind] = metrics.twin_accuracy(final, test.text_video, twin)
        if len(levels) > 1:
            hard["levels"] = {level: metrics.twin_accuracy(sim, test.text_video, test.text_twin)
                              for level, sim in levels.items()}
        result["hard_distractors"] = hard
    return result


def rankings_table(test: TestSet, final: np.ndarray, top_k: int) -> pd.DataFrame:
    k = min(top_k, final.shape[1])
    top = np.argsort(-final, axis=1, kind="stable")[:, :k]
    ranks = metrics.text_to_video_ranks(final, test.text_video)
    ids = np.asarray(test.video_ids)
    return pd.DataFrame({
        "caption_id": test.captions["caption_id"],
        "text": test.captions["text"],
        "video_id": test.captions["video_id"],
        "rank": ranks,
        "top_videos": [list(ids[row]) for row in top],
        "top_scores": [list(map(float, final[i, row])) for i, row in enumerate(top)],
    })


def load_model(path: Path, device) -> tuple[RetrievalModel, dict]:
    from hcmi.config import model_params
    from hcmi.model import build_model, create_backbone

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    backbone = create_backbone(checkpoint["backbone"]["name"], pretrained=None)
    model = build_model(model_params(checkpoint["model"]), backbone)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint


def evaluate_run(params, dataset: str, variant: str, seed: int, layout) -> dict:
    from hcmi.model.backbone import tokenizer

    started = time.time()
    device = resolve_device(params.train.device)
    model, checkpoint = load_model(layout.model_file(dataset, variant, seed), device)
    annotations = pd.read_parquet(layout.annotations(dataset))
    cache = FrameCache(layout.frames(dataset, "test"))
    test = TestSet(annotations, cache, "test")
    log.info("%s/%s seed %s: %d test videos, %d captions (%d videos missing from the cache)", dataset, variant, seed,
             len(test.video_ids), len(test.captions), len(test.missing_videos))

    tokenize = tokenizer(checkpoint["backbone"]["name"], checkpoint["max_words"])
    video = encode_videos(model, cache, test.video_ids, params.eval.batch_size, device)
    text = encode_texts(model, tokenize(list(test.captions["text"])), params.eval.batch_size, device)
    levels = level_similarity_matrices(model, text, video, params.eval.block_memory_mb, device)
    final = combine_levels(model, levels)

    result = evaluate_matrices(test, levels, final, params.eval.dsl_temperature if params.eval.dsl else None)
    result["counts"] = {
        "videos": len(test.video_ids),
        "captions": int(len(test.captions)),
        "skipped_videos": len(test.missing_videos),
        "dropped_captions": int(test.dropped_captions),
    }
    result["run"] = {"dataset": dataset, "model": variant, "seed": seed, "split": "test",
                     "selected_checkpoint": checkpoint.get("selected"), "trained_steps": checkpoint.get("step")}
    write_table(layout.rankings(dataset, variant, seed), rankings_table(test, final, params.eval.top_k))
    write_json(layout.seed_metrics(dataset, variant, seed), result)
    log.info("t2v R@1 %.1f  R@5 %.1f  R@10 %.1f  MdR %.1f | v2t R@1 %.1f (%.1f s)", result["t2v"]["R1"],
             result["t2v"]["R5"], result["t2v"]["R10"], result["t2v"]["MdR"], result["v2t"]["R1"],
             time.time() - started)
    return result


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, sub, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)


def summarize_seeds(per_seed: dict[int, dict]) -> dict:
    """Mean and (sample) standard deviation over seeds of every numeric metric, plus the per-seed values."""
    flat = {}
    for seed, result in per_seed.items():
        values: dict = {}
        _flatten("", {k: v for k, v in result.items() if k not in ("run",)}, values)
        flat[seed] = values
    keys = sorted(set().union(*(v.keys() for v in flat.values())))
    mean, std = {}, {}
    for key in keys:
        vals = np.array([flat[s].get(key, np.nan) for s in flat], dtype=float)
        mean[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        std[key] = float(np.nanstd(vals, ddof=1)) if np.isfinite(vals).sum() > 1 else 0.0
    return {"seeds": sorted(per_seed), "mean": _nest(mean), "std": _nest(std),
            "per_seed": {str(s): per_seed[s] for s in sorted(per_seed)}}


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def summarize_run(params, dataset: str, variant: str, layout) -> dict:
    from hcmi.files import read_json

    per_seed = {seed: read_json(layout.seed_metrics(dataset, variant, seed)) for seed in params.seeds_for(variant)}
    summary = summarize_seeds(per_seed)
    summary.update({"dataset": dataset, "model": variant})
    write_json(layout.metrics(dataset, variant), summary)
    return summary
