"""`hcmi evaluate --dataset D --model M --seed S`: evaluate a trained run on the dataset's test split.

Encodes every test video and caption once, scores each caption against every video of its gallery (all of them
unless `data.<dataset>.test_folds` cuts the split into galleries) in memory-bounded blocks (hcmi/scoring.py), and
writes metrics.json (t2v and v2t R@1/5/10, MdR, MnR, with and without dual softmax, per level, hard-distractor accuracy
where the dataset defines twins, counts), provenance.json beside it (what made this result and the model it
evaluated), scores.json (the headline numbers alone: what DVC shows as metrics) and rankings.parquet (top-k videos
per text query, for the reports).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from hcmi import checkpoints, metrics, provenance, runtime, scores
from hcmi.config import ConfigError, model_params
from hcmi.data.annotations import read_annotations, split_table
from hcmi.data.frames import FrameCache
from hcmi.data.splits import RetrievalSplit
from hcmi.files import write_json, write_table
from hcmi.model import create_backbone
from hcmi.model.factory import build_model
from hcmi.model.backbone import tokenizer
from hcmi.scoring import encode_split, encode_texts, gallery_scores, level_similarity_matrices, retrieval_results
from hcmi.steps.common import fingerprints

log = logging.getLogger(__name__)

BANK_SEED = 0  # which training captions form the DSL bank: fixed, so every model is rescored against the same bank


def load_model(path, device, remedy: str = ""):
    """(model in eval mode on `device`, the checkpoint's content); the model rebuilds from the file alone."""
    checkpoint = checkpoints.load(path, "trained model", remedy)
    backbone = create_backbone(checkpoint["backbone"]["name"])
    model = build_model(model_params(checkpoint["model"]), backbone)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint


def twin_outcomes(split: RetrievalSplit, final: np.ndarray) -> np.ndarray:
    """Per query: 100 when its video outscores its hard-distractor twin, 50 on a tie, 0 otherwise; NaN for a query
    without a twin (the per-query form of the hard-distractor accuracy, for paired comparisons of two models)."""
    twin = np.asarray(split.text_twin, dtype=np.int64)
    rows = np.arange(len(twin))
    own = final[rows, np.asarray(split.text_video, dtype=np.int64)]
    other = final[rows, np.where(twin >= 0, twin, 0)]
    return np.where(twin >= 0, 100.0 * ((own > other) + 0.5 * (own == other)), np.nan)


def rankings_table(split: RetrievalSplit, final: np.ndarray, top_k: int) -> pd.DataFrame:
    """Per text query: its video's rank, its cluster, the hard-distractor outcome and kind (where the split has
    twins), and the top-k videos of its gallery with their scores."""
    k = min(top_k, final.shape[1])
    top = np.argsort(-final, axis=1, kind="stable")[:, :k]
    shown = [row[final[i, row] > -np.inf] for i, row in enumerate(top)]  # only the query's own gallery
    ranks = metrics.text_to_video_ranks(final, split.text_video)
    ids = np.asarray(split.video_ids)
    kinds = split.captions["twin_kind"] if "twin_kind" in split.captions else [None] * len(ranks)
    return pd.DataFrame({
        "caption_id": split.captions["caption_id"],
        "text": split.captions["text"],
        "video_id": split.captions["video_id"],
        "cluster": split.query_clusters,
        "rank": ranks,
        "twin_outcome": twin_outcomes(split, final),
        "twin_kind": [kind if isinstance(kind, str) else None for kind in kinds],
        "top_videos": [list(ids[row]) for row in shown],
        "top_scores": [list(map(float, final[i, row])) for i, row in enumerate(shown)],
    })


def test_galleries(params, dataset: str, split: RetrievalSplit) -> list:
    """The galleries (caption rows, video columns) the test split is ranked in: `data.<dataset>.test_folds` of
    them (each query among its own gallery's videos)."""
    folds = params.dataset(dataset).test_folds
    try:
        galleries = split.galleries(folds)
    except ValueError as error:
        raise ConfigError(f"params: data.{dataset}.test_folds = {folds}: {error}") from None
    if folds > 1:
        log.info("%d galleries of %s test videos: each query is ranked among its own gallery's", folds,
                 "/".join(str(len(columns)) for _, columns in galleries))
    return galleries


def evaluate(params, layout, dataset: str, variant: str, seed: int) -> tuple[dict, pd.DataFrame, object]:
    """(metrics, rankings, runtime) of a trained run, written nowhere (`run` writes them; `hcmi verify` compares)."""
    compute = params.compute
    run_env = runtime.configure(compute.device, compute.train_threads, compute.deterministic, compute.numerics)
    remedy = f"train it first: hcmi train --dataset {dataset} --model {variant} --seed {seed}"
    model, checkpoint = load_model(layout.model_file(dataset, variant, seed), run_env.device, remedy)
    annotations = read_annotations(layout.annotations(dataset), dataset)
    cache = FrameCache(layout.frames(dataset, "test"))
    split = RetrievalSplit(annotations, cache, "test")
    log.info("%s/%s seed %s: %d test videos, %d captions (%d videos missing from the cache)", dataset, variant, seed,
             len(split.video_ids), len(split.captions), len(split.missing_videos))
    tokenize = tokenizer(checkpoint["backbone"]["name"], checkpoint["max_words"])
    ev = params.eval
    text, video = encode_split(model, split, cache, tokenize, ev.batch_size, run_env.device)
    galleries = test_galleries(params, dataset, split)
    levels, final = gallery_scores(model, text, video, galleries, ev.block_memory_mb, run_env.device)
    bank = caption_bank_scores(model, annotations, video, tokenize, ev, run_env.device) if ev.dsl else None
    result = retrieval_results(split, levels, final, ev.dsl_temperature if ev.dsl else None, bank)
    result["counts"] = {**split.counts(), "galleries": len(galleries),
                        "gallery_videos": [len(columns) for _, columns in galleries]}
    result["run"] = {"dataset": dataset, "model": variant, "seed": seed, "split": "test",
                     "selected_checkpoint": checkpoint["selected"], "trained_steps": checkpoint["step"]}
    result["model_provenance"] = checkpoint.get("provenance")
    return result, rankings_table(split, final, ev.top_k), run_env


def caption_bank(annotations: pd.DataFrame, size: int) -> list[str]:
    """`size` training captions (a fixed, seeded draw): the DSL prior of `t2v_dsl_bank`, which then sees no test
    query but the one it ranks for."""
    train = split_table(annotations, "train")["text"].tolist()
    order = np.random.default_rng(BANK_SEED).permutation(len(train))[:size]
    return [train[i] for i in sorted(order)]


def caption_bank_scores(model, annotations, video: dict, tokenize, ev, device) -> np.ndarray | None:
    """Final scores [bank, videos] of the caption bank against the split's videos (None when eval.dsl_bank is 0)."""
    texts = caption_bank(annotations, ev.dsl_bank)
    if not texts:
        return None
    bank = encode_texts(model, tokenize(texts), ev.batch_size, device, desc=f"encode a bank of {len(texts)} captions")
    return model.combine(level_similarity_matrices(model, bank, video, ev.block_memory_mb, device))


def inputs(layout, dataset: str, variant: str, seed: int) -> dict:
    return {"model": layout.model_file(dataset, variant, seed), "annotations": layout.annotations(dataset),
            "test_frames": layout.frames(dataset, "test")}


def run(params, layout, dataset: str, variant: str, seed: int) -> dict:
    started = time.time()
    result, rankings, run_env = evaluate(params, layout, dataset, variant, seed)
    made = {"provenance": provenance.collect(
        module=__name__, params=provenance.params_record(list(params.allowed or []), params.declared_values()),
        data=fingerprints(inputs(layout, dataset, variant, seed)), runtime=run_env, started=started),
        "model_provenance": result.pop("model_provenance")}
    write_table(layout.rankings(dataset, variant, seed), rankings)
    write_json(layout.seed_provenance(dataset, variant, seed), made)
    write_json(layout.seed_scores(dataset, variant, seed), scores.scores(result))
    write_json(layout.seed_metrics(dataset, variant, seed), result)
    t2v, v2t = result["t2v"], result["v2t"]
    log.info("t2v R@1 %.1f  R@5 %.1f  R@10 %.1f  MdR %.1f | v2t R@1 %.1f (%.1f s)", t2v["R1"], t2v["R5"], t2v["R10"],
             t2v["MdR"], v2t["R1"], time.time() - started)
    return result
