"""Frame sampling with decord into a memory-mappable cache (DESIGN §3.3).

Each video is opened once; `max_frames` uniformly spaced frames are read with one seek-based `get_batch`, resized
(shorter side to `image_size`, centre crop) and stored as uint8. A split's cache is a folder:

    shards/shard-00000.npy   uint8 [videos, max_frames, size, size, 3]; frames past a video's end are zero
    shards/shard-00000.json  which videos the shard holds, and the sampling fingerprint it was made with
    skipped.csv              video_id, path, reason: videos that could not be read
    index.parquet            video_id -> shard, offset, n_frames (written last: its presence means "complete")

Shards are the unit of resume: a re-run keeps every shard whose fingerprint and video list still match.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hcmi.errors import HcmiError
from hcmi.files import atomic_path, fingerprint, write_json, write_table

log = logging.getLogger(__name__)

SAMPLER_VERSION = 1


class TooManySkipped(HcmiError, RuntimeError):
    """More videos than allowed could not be read; the message lists them."""


@dataclass(frozen=True)
class Sampling:
    max_frames: int
    image_size: int

    def fingerprint(self) -> str:
        return fingerprint(self.max_frames, self.image_size, SAMPLER_VERSION)


def frame_indices(n_total: int, max_frames: int) -> np.ndarray:
    """Uniformly spaced frame numbers (segment centres); every frame when the video is shorter."""
    if n_total <= max_frames:
        return np.arange(n_total)
    return ((np.arange(max_frames) + 0.5) * n_total / max_frames).astype(np.int64)


def _resize_plan(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the shorter side equal to `size`, aspect kept."""
    if height <= width:
        return size, max(size, int(round(width * size / height)))
    return max(size, int(round(height * size / width))), size


def resize_and_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [n, h, w, 3] -> [n, size, size, 3]: shorter side to `size` (bicubic), then the centre square."""
    from PIL import Image

    height, width = frames.shape[1:3]
    new_h, new_w = _resize_plan(height, width, size)
    if (new_h, new_w) != (height, width):
        frames = np.stack([np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.BICUBIC)) for f in frames])
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(frames[:, top : top + size, left : left + size])


def read_video(path: Path, sampling: Sampling) -> tuple[np.ndarray, int]:
    """(uint8 [n, size, size, 3], n) for the sampled frames of one video; raises on unreadable files.

    decord opens the file once and seeks to the sampled frames (get_batch), never decoding the whole stream."""
    import decord

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError("file not found")
    if path.stat().st_size == 0:
        raise ValueError("empty file (0 bytes)")
    reader = decord.VideoReader(str(path), num_threads=1)
    n_total = len(reader)
    if n_total == 0:
        raise ValueError("no decodable frames")
    indices = frame_indices(n_total, sampling.max_frames).tolist()
    frames = reader.get_batch(indices).asnumpy()
    return resize_and_crop(frames, sampling.image_size), len(indices)


def _read_or_reason(path: Path | None, sampling: Sampling):
    if path is None:
        return None, "no video file for this id"
    try:
        return read_video(path, sampling), None
    except Exception as exc:  # every failure of one video is recorded, never fatal for the split
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"{type(exc).__name__}: {text[:200]}"


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def sample_split(
    videos: list[tuple[str, Path | None]],
    out_dir: Path,
    sampling: Sampling,
    shard_size: int,
    max_skip_fraction: float,
    workers: int = 1,
    progress=None,
) -> pd.DataFrame:
    """Sample every (video_id, path) into the cache at out_dir; returns the index. Unreadable videos are listed in
    skipped.csv; only when their fraction exceeds max_skip_fraction does the split fail (TooManySkipped)."""
    out_dir = Path(out_dir)
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    stamp = sampling.fingerprint()
    chunks = [videos[i : i + shard_size] for i in range(0, len(videos), shard_size)]
    expected = {_shard_name(i) for i in range(len(chunks))}
    for stale in shard_dir.glob("shard-*"):
        if stale.name.split(".")[0] not in expected:
            stale.unlink()

    index_rows, skipped_rows = [], []
    bar = progress(total=len(videos), desc="sample", unit="video") if progress else None
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, chunk in enumerate(chunks):
            meta = _load_shard_meta(shard_dir / f"{_shard_name(i)}.json", stamp, [v for v, _ in chunk])
            if meta is None:
                meta = _write_shard(pool, shard_dir, i, chunk, sampling, stamp)
            for offset, (video_id, n_frames) in enumerate(meta["videos"]):
                index_rows.append((video_id, _shard_name(i), offset, n_frames))
            skipped_rows += meta["skipped"]
            if bar:
                bar.update(len(chunk))
    if bar:
        bar.close()

    skipped = pd.DataFrame(skipped_rows, columns=["video_id", "path", "reason"])
    write_table(out_dir / "skipped.csv", skipped)
    fraction = len(skipped) / max(1, len(videos))
    if len(skipped):
        log.warning("%d of %d videos skipped (%.2f%%), listed in %s", len(skipped), len(videos), 100 * fraction,
                    out_dir / "skipped.csv")
    if fraction > max_skip_fraction:
        listing = "\n".join(f"  {r.video_id}: {r.path}: {r.reason}" for r in skipped.itertuples())
        raise TooManySkipped(
            f"{out_dir}: {len(skipped)} of {len(videos)} videos unreadable ({100 * fraction:.1f}% > "
            f"frames.max_skip_fraction {100 * max_skip_fraction:.1f}%):\n{listing}"
        )
    index = pd.DataFrame(index_rows, columns=["video_id", "shard", "offset", "n_frames"])
    write_table(out_dir / "index.parquet", index)
    return index


def _load_shard_meta(path: Path, stamp: str, video_ids: list[str]) -> dict | None:
    npy = path.with_suffix(".npy")
    if not (path.exists() and npy.exists()):
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != stamp or meta.get("video_ids") != video_ids:
        return None
    return meta


def _write_shard(pool, shard_dir: Path, i: int, chunk, sampling: Sampling, stamp: str) -> dict:
    results = list(pool.map(lambda item: _read_or_reason(item[1], sampling), chunk))
    good = [(vid, res) for (vid, _), (res, _) in zip(chunk, results) if res is not None]
    skipped = [(vid, str(path) if path else "", reason) for (vid, path), (res, reason) in zip(chunk, results)
               if res is None]
    size = sampling.image_size
    array = np.zeros((len(good), sampling.max_frames, size, size, 3), dtype=np.uint8)
    for k, (_, (frames, n)) in enumerate(good):
        array[k, :n] = frames
    with atomic_path(shard_dir / f"{_shard_name(i)}.npy") as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
    meta = {
        "fingerprint": stamp,
        "video_ids": [vid for vid, _ in chunk],
        "videos": [(vid, int(n)) for vid, (_, n) in good],
        "skipped": skipped,
    }
    write_json(shard_dir / f"{_shard_name(i)}.json", meta)
    return meta


class FrameCache:
    """Read access to one split's cache: frames of a video by id, memory-mapped (no decoding)."""

    def __init__(self, split_dir: Path):
        self.dir = Path(split_dir)
        index_path = self.dir / "index.parquet"
        if not index_path.exists():
            raise FileNotFoundError(f"{index_path}: frame cache is missing or incomplete (run `hcmi sample`)")
        self.index = pd.read_parquet(index_path)
        self._rows = {v: (s, o, n) for v, s, o, n in self.index.itertuples(index=False)}
        self._shards: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._rows

    @property
    def video_ids(self) -> list[str]:
        return list(self._rows)

    def _shard(self, name: str) -> np.ndarray:
        if name not in self._shards:
            self._shards[name] = np.load(self.dir / "shards" / f"{name}.npy", mmap_mode="r")
        return self._shards[name]

    def frames(self, video_id: str) -> tuple[np.ndarray, int]:
        """(uint8 [max_frames, size, size, 3], number of valid frames)."""
        shard, offset, n_frames = self._rows[video_id]
        return self._shard(shard)[offset], int(n_frames)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        if not self._rows:
            return ()
        first = next(iter(self._rows))
        return tuple(self.frames(first)[0].shape)
