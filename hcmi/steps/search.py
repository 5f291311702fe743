"""`hcmi search "a query" --index INDEX`: ranked videos for a text query, in two stages — the coarse index proposes
`search.depth` candidates by the video-sentence level, the model's full multi-level score re-ranks them (hcmi/index/).

A table on the terminal; JSON with --json; with --html PAGE a self-contained page with frame thumbnails. The query
is encoded by the model that built the index (its checkpoint is checked by sha256 against the index's record).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path

from hcmi import runtime
from hcmi.errors import HcmiError
from hcmi.files import write_text
from hcmi.index import CoarseIndex, VideoStore, search
from hcmi.model.backbone import token_count, tokenizer
from hcmi.scoring import encode_texts
from hcmi.steps.evaluate import load_model
from hcmi.steps.index import check_model, frame_cache_of, read_index

log = logging.getLogger(__name__)


class QueryError(HcmiError, ValueError):
    """A query that cannot be searched (empty); the message says why."""


def ranked(params, index_dir: Path, queries: list[str], checkpoint: Path | None = None, top_k: int | None = None,
           recorded_settings: bool = False):
    """(the index's record, per query the list of (video_id, score), best first). recorded_settings: search with
    the settings the index was built with (top_k, depth) instead of params' (no params file of the user's)."""
    index_dir = Path(index_dir)
    record = read_index(index_dir)
    checkpoint = Path(checkpoint or record["model"]["checkpoint"])
    check_model(index_dir, checkpoint)
    for query in queries:
        if not query.strip():
            raise QueryError("the query is empty: say what the video shows, e.g. hcmi search \"a dog catches a ball\"")
    max_words, backbone = record["model"]["max_words"], record["model"]["backbone"]["name"]
    for query in queries:
        if token_count(backbone, query) > max_words:
            log.warning("the query has %d tokens, more than the model's %d: it is cut to its first %d",
                        token_count(backbone, query), max_words, max_words)
    run_env = runtime.configure(params.compute.device, params.compute.train_threads, params.compute.deterministic, params.compute.numerics)
    model, _ = load_model(checkpoint, run_env.device)
    tokens = tokenizer(backbone, max_words)(queries)
    text = encode_texts(model, tokens, params.eval.batch_size, run_env.device, desc="encode the query")
    store = VideoStore.open(index_dir / "store", record["model"]["checkpoint_sha256"])
    coarse = CoarseIndex.for_store(store)
    settings = params.section("search").to_dict()
    if recorded_settings:
        settings.update(record.get("search", {}))
    k = min(top_k or settings["top_k"], store.rows)
    depth = max(k, min(settings["depth"], store.rows))
    return record, search(text, store, coarse, model.similarity, depth=depth, k=k)


def table(query: str, hits) -> str:
    lines = [f"query: {query}", f"{'rank':>4}  {'score':>7}  video"]
    lines += [f"{rank:>4}  {score:7.4f}  {video_id}" for rank, (video_id, score) in enumerate(hits, 1)]
    return "\n".join(lines)


def page(record: dict, queries: list[str], results, thumbnails: int) -> str:
    """A self-contained HTML page: per query, the ranked videos with a strip of their frames (inline PNG)."""
    parts = ["<!doctype html><meta charset='utf-8'><title>hcmi search</title>",
             "<style>body{font-family:sans-serif;margin:2em}td{padding:4px 8px;vertical-align:middle}"
             "img{image-rendering:pixelated;height:64px}</style>",
             f"<p>Index of {record['videos']} videos, model {html.escape(record['model']['checkpoint'])}.</p>"]
    for query, hits in zip(queries, results):
        parts.append(f"<h2>{html.escape(query)}</h2><table><tr><th>rank</th><th>score</th><th>video</th>"
                     "<th>frames</th></tr>")
        for rank, (video_id, score) in enumerate(hits, 1):
            parts.append(f"<tr><td>{rank}</td><td>{score:.4f}</td><td>{html.escape(video_id)}</td>"
                         f"<td>{_strip_image(record, video_id, thumbnails)}</td></tr>")
        parts.append("</table>")
    return "\n".join(parts) + "\n"


def _strip_image(record: dict, video_id: str, count: int) -> str:
    import numpy as np
    from PIL import Image

    cache = frame_cache_of(record, video_id)
    if cache is None:
        return ""
    frames, n_valid = cache.frames(video_id)
    picks = np.linspace(0, max(0, n_valid - 1), num=min(count, max(1, n_valid))).round().astype(int)
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate([frames[i] for i in picks], axis=1)).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"<img alt='{html.escape(video_id)}' src='data:image/png;base64,{encoded}'>"


def run(params, index_dir: Path, queries: list[str], checkpoint: Path | None = None, top_k: int | None = None,
        as_json: bool = False, html_out: Path | None = None, recorded_settings: bool = False) -> list:
    record, results = ranked(params, index_dir, queries, checkpoint, top_k, recorded_settings)
    if as_json:
        print(json.dumps([{"query": q, "results": [{"video_id": v, "score": s} for v, s in hits]}
                          for q, hits in zip(queries, results)], indent=2))
    else:
        print("\n\n".join(table(q, hits) for q, hits in zip(queries, results)))
    if html_out:
        write_text(html_out, page(record, queries, results, params.report.thumbnails_per_video))
        log.info("search page written: %s", html_out)
    return results
