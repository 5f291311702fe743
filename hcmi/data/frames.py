"""Frame sampling with decord into a compressed frame cache (docs/datasets.md: size and time).

A video is cut into N = `max_frames` equal segments and C = `candidates` frames are kept per segment, so that
training can draw a different frame per segment in each epoch and view (adaptive label denoising needs two random
views of a video) while evaluation keeps one fixed choice, the middle candidate. Segment s of a video of n frames
covers frames [s n / N, (s + 1) n / N); candidate c of C sits at fraction (c + 0.5) / C inside it, so with C odd the
middle candidate is the segment centre. A video of n <= N frames has one segment per frame and every candidate is
that frame.

Each video is opened once; all N x C wanted frames are read with one seek-based `get_batch`, resized (shorter side to
`image_size`, centre crop) and stored as JPEG (`jpeg_quality`): C candidates then cost less disk than one raw uint8
frame did (docs/datasets.md). A split's cache is a folder:

    shards/shard-00000.jpg.bin        the JPEG files of the shard's videos, back to back (segment-major, then candidate)
    shards/shard-00000.offsets.npy    int64 [n_jpegs + 1]: where each JPEG starts (and the end of the last)
    shards/shard-00000.json           which videos the shard holds, and the sampling fingerprint it was made with
    shards/sampling.json              the sampling parameters (segments, candidates, size, quality)
    skipped.csv                       video_id, path, reason: videos that could not be read
    index.parquet                     video_id -> shard, offset (its first JPEG), n_frames (written last: "complete")

Shards are the unit of resume: a re-run keeps every shard whose fingerprint and video list still match.
"""

from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hcmi.errors import HcmiError
from hcmi.files import atomic_path, fingerprint, write_json, write_table

log = logging.getLogger(__name__)

SAMPLER_VERSION = 2  # 2: candidates per segment, JPEG shards
BLOB_SUFFIX, OFFSETS_SUFFIX, META_SUFFIX = ".jpg.bin", ".offsets.npy", ".json"
SAMPLING_FILE = "sampling.json"


class TooManySkipped(HcmiError, RuntimeError):
    """More videos than allowed could not be read; the message lists them."""


class FrameCacheError(HcmiError, RuntimeError):
    """A frame cache is missing, incomplete or inconsistent; the message names the folder or file."""


@dataclass(frozen=True)
class Sampling:
    max_frames: int  # segments per video
    image_size: int
    candidates: int  # frames kept per segment
    jpeg_quality: int

    def fingerprint(self) -> str:
        return fingerprint(asdict(self), SAMPLER_VERSION)


# ----------------------------------------------------------------------------------------------------------------
# which frames


def candidate_indices(n_total: int, segments: int, candidates: int) -> np.ndarray:
    """Frame numbers int64 [n_valid, candidates]: candidate c of segment s at fraction (c + 0.5) / C of the segment
    (integer arithmetic, so the middle of an odd C is exactly the segment centre); n_valid = min(n_total, segments),
    and a video no longer than `segments` frames gets one segment per frame, every candidate that frame."""
    if n_total <= segments:
        return np.repeat(np.arange(n_total, dtype=np.int64)[:, None], candidates, axis=1)
    s = np.arange(segments, dtype=np.int64)[:, None]
    c = np.arange(candidates, dtype=np.int64)[None, :]
    return ((2 * candidates * s + 2 * c + 1) * n_total) // (2 * candidates * segments)


def frame_indices(n_total: int, max_frames: int) -> np.ndarray:
    """Uniformly spaced frame numbers (segment centres); every frame when the video is shorter."""
    return candidate_indices(n_total, max_frames, 1)[:, 0]


def fixed_choice(segments: int, candidates: int) -> np.ndarray:
    """The evaluation's candidate per segment: the middle one (the segment centre when C is odd)."""
    return np.full(segments, candidates // 2, dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------------
# reading videos


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


def open_video(path: Path):
    """A decord VideoReader (one decoding thread); raises with the reason on unreadable files."""
    import decord

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError("file not found")
    if path.stat().st_size == 0:
        raise ValueError("empty file (0 bytes)")
    reader = decord.VideoReader(str(path), num_threads=1)
    if len(reader) == 0:
        raise ValueError("no decodable frames")
    return reader


def read_frames(reader, indices: np.ndarray, size: int) -> np.ndarray:
    """uint8 [*indices.shape, size, size, 3]: the frames at `indices`, read in one seek-based get_batch (each
    distinct frame once, in increasing order: decord decodes forward within a keyframe interval), resized."""
    wanted, where = np.unique(indices, return_inverse=True)
    frames = resize_and_crop(reader.get_batch(wanted.tolist()).asnumpy(), size)
    return frames[where.reshape(indices.shape)]


def read_candidates(path: Path, sampling: Sampling) -> tuple[np.ndarray, int]:
    """(uint8 [n_valid, candidates, size, size, 3], n_valid) for one video; raises on unreadable files."""
    reader = open_video(path)
    indices = candidate_indices(len(reader), sampling.max_frames, sampling.candidates)
    return read_frames(reader, indices, sampling.image_size), len(indices)


def read_video(path: Path, sampling: Sampling) -> tuple[np.ndarray, int]:
    """(uint8 [n_valid, size, size, 3], n_valid): one frame per segment, the segment centres (a loader without a
    cache reads this); raises on unreadable files."""
    reader = open_video(path)
    indices = frame_indices(len(reader), sampling.max_frames)
    return read_frames(reader, indices, sampling.image_size), len(indices)


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def sample_video(path: Path, sampling: Sampling) -> tuple[list[bytes], int]:
    """(JPEG files of the frames, segment-major then candidate, n_valid): what the cache stores for one video."""
    frames, n_valid = read_candidates(path, sampling)
    return [encode_jpeg(frame, sampling.jpeg_quality) for frame in frames.reshape(-1, *frames.shape[2:])], n_valid


def _sample_or_reason(path: Path | None, sampling: Sampling):
    """(sample_video's result, None) or (None, reason): every failure of one video is recorded, never fatal for
    the split."""
    if path is None:
        return None, "no video file for this id"
    try:
        return sample_video(path, sampling), None
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"{type(exc).__name__}: {text[:200]}"


# ----------------------------------------------------------------------------------------------------------------
# writing a split's cache


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
            meta = _load_shard_meta(shard_dir / _shard_name(i), stamp, [v for v, _ in chunk])
            if meta is None:
                meta = _write_shard(pool, shard_dir / _shard_name(i), chunk, sampling, stamp)
            index_rows += [(video_id, _shard_name(i), first, n_frames) for video_id, n_frames, first in meta["videos"]]
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
    write_json(shard_dir / SAMPLING_FILE, {**asdict(sampling), "fingerprint": stamp, "format": "jpeg"})
    index = pd.DataFrame(index_rows, columns=["video_id", "shard", "offset", "n_frames"])
    write_table(out_dir / "index.parquet", index)
    return index


def _shard_files(base: Path) -> tuple[Path, Path, Path]:
    return (base.with_name(base.name + BLOB_SUFFIX), base.with_name(base.name + OFFSETS_SUFFIX),
            base.with_name(base.name + META_SUFFIX))


def _load_shard_meta(base: Path, stamp: str, video_ids: list[str]) -> dict | None:
    blob, offsets, meta_path = _shard_files(base)
    if not (blob.exists() and offsets.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != stamp or meta.get("video_ids") != video_ids:
        return None
    return meta


def _write_shard(pool, base: Path, chunk, sampling: Sampling, stamp: str) -> dict:
    """Stream the chunk's JPEGs into the shard's blob in video order (memory stays at the frames in flight), then
    the offsets, then the meta file whose presence marks the shard finished."""
    blob_path, offsets_path, meta_path = _shard_files(base)
    offsets, videos, skipped = [0], [], []
    results = pool.map(lambda item: _sample_or_reason(item[1], sampling), chunk)
    with atomic_path(blob_path) as tmp, open(tmp, "wb") as blob:
        for (video_id, path), (result, reason) in zip(chunk, results):
            if result is None:
                skipped.append((video_id, str(path) if path else "", reason))
                continue
            jpegs, n_valid = result
            videos.append((video_id, int(n_valid), len(offsets) - 1))
            for data in jpegs:
                blob.write(data)
                offsets.append(offsets[-1] + len(data))
    with atomic_path(offsets_path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.asarray(offsets, dtype=np.int64))
    meta = {"fingerprint": stamp, "video_ids": [vid for vid, _ in chunk], "videos": videos, "skipped": skipped}
    write_json(meta_path, meta)
    return meta


# ----------------------------------------------------------------------------------------------------------------
# reading a split's cache


def decode_jpeg_into(out: np.ndarray, data: np.ndarray) -> None:
    """Decode one JPEG (uint8 bytes) of out's size into out (uint8 [h, w, 3]) with Pillow's libjpeg-turbo.

    The stream goes to the decoder directly (the size is known), skipping Image.open's header parsing in Python:
    measured 11% faster per 224 px frame, the same pixels, and as fast as torchvision's decoder, whose image
    decoding is deprecated since torchvision 0.29 (bench/loader.py compares them)."""
    from PIL import Image

    height, width = out.shape[:2]
    out[...] = np.asarray(Image.frombytes("RGB", (width, height), memoryview(data), "jpeg", "RGB", ""))


class FrameCache:
    """Read access to one split's cache: the frames of a video by id, one candidate per segment, decoded from the
    memory-mapped JPEG shards. With keep_decoded_mb > 0 decoded frames are kept, up to that much memory, and a frame
    read again (a training pair in the next epoch) is copied instead of decoded: the same pixels, in this process."""

    def __init__(self, split_dir: Path, keep_decoded_mb: float = 0):
        self.dir = Path(split_dir)
        index_path = self.dir / "index.parquet"
        if not index_path.exists():
            raise FrameCacheError(f"{index_path}: frame cache is missing or incomplete (run `hcmi sample`)")
        settings_path = self.dir / "shards" / SAMPLING_FILE
        try:
            settings = json.loads(settings_path.read_text())
            self.sampling = Sampling(**{k: settings[k] for k in Sampling.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FrameCacheError(f"{settings_path}: unreadable sampling parameters ({exc}); the cache predates this "
                                  f"version or is damaged: run `hcmi sample` again") from None
        self.index = pd.read_parquet(index_path)
        self._rows = {v: (s, o, n) for v, s, o, n in self.index.itertuples(index=False)}
        self._shards: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        size = self.sampling.image_size
        self._keep = int(keep_decoded_mb * 2**20) // (size * size * 3)  # frames the memory holds
        self._decoded: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._rows

    @property
    def video_ids(self) -> list[str]:
        return list(self._rows)

    @property
    def n_segments(self) -> int:
        return self.sampling.max_frames

    @property
    def n_candidates(self) -> int:
        return self.sampling.candidates

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """(segments, size, size, 3): the shape of `frames(...)[0]`."""
        size = self.sampling.image_size
        return (self.sampling.max_frames, size, size, 3)

    def _shard(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self._shards:
            blob, offsets, _ = _shard_files(self.dir / "shards" / name)
            # a plain view of the mapping: slicing an np.memmap runs its subclass hooks for every frame
            data = (np.memmap(blob, dtype=np.uint8, mode="r").view(np.ndarray) if blob.stat().st_size
                    else np.zeros(0, np.uint8))
            self._shards[name] = (data, np.load(offsets))
        return self._shards[name]

    def frames(self, video_id: str, choice: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """(uint8 [segments, size, size, 3], n_valid): candidate choice[s] of each segment s (None: the fixed
        evaluation choice, the middle candidate); frames past the video's end are zero."""
        out = np.empty(self.frame_shape, dtype=np.uint8)
        return out, self.frames_into(out, video_id, choice)

    def frames_into(self, out: np.ndarray, video_id: str, choice: np.ndarray | None = None) -> int:
        """Decode the chosen frames into out (uint8 [segments, size, size, 3]) and zero the rows past the video's
        end; returns n_valid."""
        shard, first, n_valid = self._rows[video_id]
        data, offsets = self._shard(shard)
        segments, candidates = self.sampling.max_frames, self.sampling.candidates
        choice = fixed_choice(segments, candidates) if choice is None else np.asarray(choice)
        if choice.shape != (segments,) or choice.min(initial=0) < 0 or choice.max(initial=0) >= candidates:
            raise ValueError(f"choice must hold {segments} candidate numbers in [0, {candidates}), got {choice}")
        for s in range(int(n_valid)):
            k = first + s * candidates + int(choice[s])
            kept = self._decoded.get((shard, k))
            if kept is not None:
                out[s] = kept
                continue
            decode_jpeg_into(out[s], data[offsets[k] : offsets[k + 1]])
            if len(self._decoded) < self._keep:
                self._decoded[(shard, k)] = out[s].copy()
        out[int(n_valid) :] = 0
        return int(n_valid)
