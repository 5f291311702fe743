"""`hcmi index`: point a trained model at videos and make them searchable (`hcmi search`).

    hcmi index --videos FOLDER --checkpoint model.pt --out INDEX      # your own videos
    hcmi index --dataset D --model M --seed S                        # a dataset's test split (the workflow's step)

An index folder holds, beside index.json (which checkpoint, by sha256, and which parameters built it; its paths are
relative to the index folder, so an index works from any directory and moves with the data tree it sits in):
  store/    every representation the model's levels need, one memory-mapped array per key, plus the coarse FAISS
            index over the video-level vectors (hcmi/index/)
  frames/   the frame caches the videos were encoded from (for a folder: one per `hcmi index` run, sampled by the
            same sampler as the pipeline; a dataset split: its own cache), which search pages show as thumbnails
  skipped.csv  unreadable files, with the reason
Adding videos to an existing index encodes only the new ones; an interrupted run continues where it stopped (frames
resume per shard, representations are committed block by block). An index refuses a model other than its own.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd

from hcmi import runtime
from hcmi.data import videos
from hcmi.data.frames import FrameCache, Sampling, sample_split
from hcmi.errors import HcmiError
from hcmi.files import read_json, sha256sum, write_json, write_table
from hcmi.index import CoarseIndex, IndexMismatch, IndexMissing, VideoStore
from hcmi.logs import progress
from hcmi.scoring import encode_videos
from hcmi.steps.common import scheduled_workers
from hcmi.steps.evaluate import load_model

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
INDEX_FORMAT = 2  # 2: paths relative to the index folder (1: as given to `hcmi index`, relative to where it ran)
PENDING = "pending.json"  # the videos a run is sampling, so that a re-run after an interruption resumes that part
ENCODE_BLOCK = 256  # videos encoded and committed to the store at a time: the unit of resume


class IndexRequestError(HcmiError):
    """An index cannot be built or used as asked; the message says why."""


def in_index(out: Path, path: Path) -> str:
    """A path as index.json records it: relative to the index folder."""
    return os.path.relpath(Path(path).resolve(), Path(out).resolve())


def from_index(out: Path, stored: str, record: dict) -> str:
    """A path recorded in index.json, usable from the current directory."""
    path = Path(stored)
    if path.is_absolute() or record.get("format", 1) < INDEX_FORMAT:
        return str(path)
    return str(Path(out) / path)


def describe(checkpoint: Path, model_record: dict, out: Path) -> dict:
    return {"checkpoint": in_index(out, checkpoint), "checkpoint_sha256": sha256sum(checkpoint),
            "backbone": model_record["backbone"], "variant": model_record.get("variant"),
            "max_words": model_record["max_words"], "max_frames": model_record.get("max_frames"),
            "image_size": model_record["image_size"]}


def read_index(out: Path) -> dict:
    """index.json, its paths made usable from the current directory."""
    path = Path(out) / INDEX_FILE
    if not path.exists():
        raise IndexMissing(f"{out}: not an index (no {INDEX_FILE}); build it with `hcmi index`")
    record = read_json(path)
    record["model"]["checkpoint"] = from_index(out, record["model"]["checkpoint"], record)
    record["frame_caches"] = [from_index(out, folder, record) for folder in record["frame_caches"]]
    return record


def check_model(out: Path, checkpoint: Path) -> dict:
    """The index's record, after checking that `checkpoint` is the model that built it."""
    record = read_index(out)
    digest = sha256sum(checkpoint)
    if digest != record["model"]["checkpoint_sha256"]:
        raise IndexMismatch(f"{out} was built by {record['model']['checkpoint']} (sha256 "
                            f"{record['model']['checkpoint_sha256'][:12]}), not by {checkpoint} (sha256 "
                            f"{digest[:12]}): its representations cannot be compared with this model's queries")
    return record


def encode_into(store: VideoStore, model, cache: FrameCache, batch_size: int, device) -> int:
    """Encode the cached videos the store does not hold yet, committing every ENCODE_BLOCK; how many were new."""
    new = store.missing(cache.video_ids)
    for start in progress(range(0, len(new), ENCODE_BLOCK), desc="index", unit="block"):
        block = new[start : start + ENCODE_BLOCK]
        store.append(block, encode_videos(model, cache, block, batch_size, device, desc="encode videos"))
    log.info("%d videos encoded into %s (%d in the index)", len(new), store.path, store.rows)
    return len(new)


def _open(params, checkpoint: Path, out: Path):
    run_env = runtime.configure(params.compute.device, params.compute.train_threads, params.compute.deterministic, params.compute.numerics)
    model, record = load_model(checkpoint, run_env.device, "train it first, or give another --checkpoint")
    model_info = describe(checkpoint, record, out)
    if (out / INDEX_FILE).exists():
        check_model(out, checkpoint)
    store = VideoStore.open_or_create(out / "store", model_info["checkpoint_sha256"], {"model": model_info})
    return model, model_info, store, run_env


def _finish(out: Path, store: VideoStore, model_info: dict, caches: list[str], params, new: int) -> dict:
    CoarseIndex.for_store(store)  # built, or extended with the new rows, and saved beside the store
    record = {"format": INDEX_FORMAT, "model": model_info, "frame_caches": caches, "videos": store.rows,
              "search": params.section("search").to_dict()}
    write_json(out / INDEX_FILE, record)
    log.info("index %s: %d videos (%d new)", out, store.rows, new)
    return record


def run_folder(params, videos_dir: Path, checkpoint: Path, out: Path) -> dict:
    """Index every video file below videos_dir (the new ones only, when the index exists)."""
    out, videos_dir = Path(out), Path(videos_dir)
    if not videos_dir.is_dir():
        raise IndexRequestError(f"{videos_dir}: no such folder of videos")
    model, model_info, store, run_env = _open(params, Path(checkpoint), out)
    files = videos.index_videos(videos_dir)
    skipped_before = set(_skipped(out)["video_id"])
    ids = sorted({videos.video_stem(path.name) for path in files.values()})
    new_ids = [v for v in store.missing(ids) if v not in skipped_before]
    caches = read_index(out)["frame_caches"] if (out / INDEX_FILE).exists() else []
    caches = [in_index(out, folder) for folder in caches]
    new = 0
    if new_ids:
        part = _open_part(out, caches, new_ids)
        frames = params.frames
        sampling = Sampling(max_frames=model_info["max_frames"], image_size=model_info["image_size"], candidates=1,
                            jpeg_quality=frames.jpeg_quality)
        sample_split([(v, files[v]) for v in new_ids], part, sampling, frames.shard_size, max_skip_fraction=1.0,
                     workers=scheduled_workers(), progress=progress)
        _note_skipped(out, pd.read_csv(part / "skipped.csv"))
        new = encode_into(store, model, FrameCache(part), params.eval.batch_size, run_env.device)
    record = _finish(out, store, model_info, caches, params, new)
    (out / "frames" / PENDING).unlink(missing_ok=True)
    return record


def discard_if_stale(out: Path, checkpoint: Path) -> None:
    """A trained run's own index that an earlier model of the run built (the run was trained again: a code or
    parameter change): the workflow's output is rebuilt, not refused. Indexes of folders (`run_folder`) are the
    user's and stay refused on a mismatch."""
    digest = sha256sum(checkpoint)
    stale = (out / INDEX_FILE).exists() and read_index(out)["model"]["checkpoint_sha256"] != digest
    if not stale and (out / "store").exists():
        try:
            VideoStore.open(out / "store", digest)
        except IndexMismatch:
            stale = True
        except IndexMissing:
            pass
    if stale:
        log.info("%s was built by an earlier model of this run: building it again", out)
        shutil.rmtree(out / "store", ignore_errors=True)
        (out / INDEX_FILE).unlink(missing_ok=True)


def run_split(params, layout, dataset: str, variant: str, seed: int, split: str = "test") -> dict:
    """Index a dataset split with a trained run (its frame cache is encoded as it is)."""
    out = layout.search_index(dataset, variant, seed)
    discard_if_stale(out, layout.model_file(dataset, variant, seed))
    model, model_info, store, run_env = _open(params, layout.model_file(dataset, variant, seed), out)
    cache = FrameCache(layout.frames(dataset, split))
    new = encode_into(store, model, cache, params.eval.batch_size, run_env.device)
    write_table(out / "skipped.csv", pd.read_csv(layout.frame_skipped(dataset, split)))
    return _finish(out, store, model_info, [in_index(out, layout.frames(dataset, split))], params, new)


def _open_part(out: Path, caches: list[str], new_ids: list[str]) -> Path:
    """The frame cache for this run's new videos: the last part again when an interrupted run left it with the same
    videos to sample (so its shards resume), else a new part."""
    pending = out / "frames" / PENDING
    if pending.exists() and read_json(pending)["ids"] == new_ids:
        part = read_json(pending)["part"]
    else:
        part = f"frames/part-{len(caches):05d}"  # relative to the index folder, as index.json records it
        write_json(pending, {"ids": new_ids, "part": part})
    if part not in caches:
        caches.append(part)
    return out / part


def _skipped(out: Path) -> pd.DataFrame:
    path = Path(out) / "skipped.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["video_id", "path", "reason"])


def _note_skipped(out: Path, new: pd.DataFrame) -> None:
    if len(new):
        log.warning("%d files could not be read and are not indexed (listed in %s)", len(new), out / "skipped.csv")
    write_table(out / "skipped.csv", pd.concat([_skipped(out), new]).drop_duplicates("video_id", keep="last"))


def frame_cache_of(record: dict, video_id: str) -> FrameCache | None:
    for folder in record["frame_caches"]:
        cache = FrameCache(Path(folder))
        if video_id in cache:
            return cache
    return None

