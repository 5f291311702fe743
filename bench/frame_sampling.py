"""Frame sampling, per core, and what the frame cache costs on disk.

1. Time. On generated 30 s, 30 fps, 320x240 H.264 videos (MSR-VTT-like), per video: today's sampling (12 segment
   centres, one VideoReader, one seek-based get_batch), sampling with candidates (3 per segment: 36 frames, then JPEG
   encoding, i.e. what `hcmi sample` does now), and decoding every frame then picking 12 (the CLIP4Clip way). A seek
   lands on the keyframe before the wanted frame and decodes forward, so its cost grows with the keyframe interval:
   the table shows 1 s, 2 s and libx264's default of 250 frames (8.3 s).
2. Bytes. Videos panning and zooming over a natural photo (matplotlib's sample `grace_hopper.jpg`, 600x512),
   320x240 at 30 fps: an MSR-VTT-like clip (12 segments) and an ActivityNet-like one (64 segments), cached at 224 px
   as raw uint8 (one frame per segment, the former cache) and as JPEG with 3 candidates per segment.
3. Quality. Bytes per frame and PSNR against the uint8 frame for several JPEG qualities, on the same frames.

    python bench/frame_sampling.py [--videos 3] [--seconds 30]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, save, table  # noqa: E402

from hcmi.data.frames import (Sampling, encode_jpeg, frame_indices, read_candidates, read_video,  # noqa: E402
                              resize_and_crop, sample_split, sample_video)
from hcmi.data.synthetic import write_mp4  # noqa: E402

FRAMES, SIZE, CANDIDATES, QUALITY = 12, 224, 3, 90
WIDTH, HEIGHT, FPS = 320, 240, 30
KEYFRAME_INTERVALS = {"1 s (30 frames)": 30, "2 s (60 frames)": 60, "libx264 default (250 frames)": 250}
CLIPS = {"MSR-VTT-like": 12, "ActivityNet-like": 64}  # segments per video
QUALITIES = (75, 85, 90, 95)


def make_videos(folder: Path, count: int, seconds: int, fps: int = FPS, keyframe_interval: int | None = None
                ) -> list[Path]:
    """Moving gradients with noise: content that H.264 cannot compress to nothing."""
    rng = np.random.default_rng(0)
    paths = []
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    for v in range(count):
        frames = np.empty((seconds * fps, HEIGHT, WIDTH, 3), dtype=np.uint8)
        for t in range(len(frames)):
            base = (xx + 3 * t + 40 * v) % 256
            frames[t, ..., 0] = base
            frames[t, ..., 1] = (yy + 2 * t) % 256
            frames[t, ..., 2] = rng.integers(0, 40, size=(HEIGHT, WIDTH))
        path = folder / f"video{v}.mp4"
        write_mp4(path, frames, fps, keyframe_interval, bit_exact=False)
        paths.append(path)
    return paths


def photo_video(path: Path, seconds: float, fps: int = FPS, phase: float = 0.0) -> Path:
    """A camera panning across and zooming into a natural photo (realistic content for JPEG sizes)."""
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photo = Image.open(handle).convert("RGB")
    n = max(2, int(round(seconds * fps)))
    frames = np.empty((n, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for t in range(n):
        progress = (t / (n - 1) + phase) % 1.0
        zoom = 1.0 - 0.45 * (0.5 - 0.5 * np.cos(2 * np.pi * progress))  # in and out again
        w, h = photo.width * zoom, photo.width * zoom * HEIGHT / WIDTH
        left = (photo.width - w) * progress
        top = (photo.height - h) * (0.5 + 0.5 * np.sin(2 * np.pi * progress))
        box = (left, top, left + w, top + h)
        frames[t] = np.asarray(photo.resize((WIDTH, HEIGHT), Image.BILINEAR, box=box))
    write_mp4(path, frames, fps, bit_exact=False)
    return path


def decode_all_then_pick(path: Path) -> np.ndarray:
    """Decode every frame sequentially (PyAV), keep the 12 sampled ones, resize them."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        stream.codec_context.thread_count = 1
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    picked = np.stack([frames[i] for i in frame_indices(len(frames), FRAMES)])
    return resize_and_crop(picked, SIZE)


def timing_rows(videos: int, seconds: int) -> list[dict]:
    today = Sampling(max_frames=FRAMES, image_size=SIZE, candidates=1, jpeg_quality=QUALITY)
    now = Sampling(max_frames=FRAMES, image_size=SIZE, candidates=CANDIDATES, jpeg_quality=QUALITY)
    rows = []
    for label, interval in KEYFRAME_INTERVALS.items():
        with tempfile.TemporaryDirectory() as tmp:
            paths = make_videos(Path(tmp), videos, seconds, keyframe_interval=interval)
            seek = best_time(lambda: [read_video(p, today) for p in paths], repeat=2)
            candidates = best_time(lambda: [sample_video(p, now) for p in paths], repeat=2)
            full = best_time(lambda: [decode_all_then_pick(p) for p in paths], repeat=1)
            same = bool(np.abs(read_video(paths[0], today)[0].astype(int)
                               - decode_all_then_pick(paths[0]).astype(int)).mean() < 8)
        rows.append({"keyframe interval": label, "seek (videos/s/core)": round(len(paths) / seek, 2),
                     "candidates + JPEG (videos/s/core)": round(len(paths) / candidates, 2),
                     "decode all (videos/s/core)": round(len(paths) / full, 2), "speed-up": round(full / seek, 1),
                     "candidates cost (x today)": round(candidates / seek, 2),
                     "candidates speed-up": round(full / candidates, 1), "same frames": same})
    return rows


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def size_rows(seconds: int) -> tuple[list[dict], list[dict]]:
    """Cache bytes per video (raw vs JPEG candidates) and the JPEG quality sweep, on the photo videos."""
    rows, sweep_frames = [], []
    raw_frame = SIZE * SIZE * 3
    with tempfile.TemporaryDirectory() as tmp:
        for name, segments in CLIPS.items():
            length = seconds * (4 if segments > 12 else 1)  # paragraph videos are longer
            path = photo_video(Path(tmp) / f"{name}.mp4", length)
            setup = Sampling(max_frames=segments, image_size=SIZE, candidates=CANDIDATES, jpeg_quality=QUALITY)
            sample_split([(name, path)], Path(tmp) / name, setup, shard_size=1, max_skip_fraction=0.0)
            jpeg_bytes = (Path(tmp) / name / "shards" / "shard-00000.jpg.bin").stat().st_size
            offsets_bytes = 8 * segments * CANDIDATES  # one int64 offset per JPEG
            per_video = jpeg_bytes + offsets_bytes
            rows.append({"clip": f"{name} ({segments} segments, {length} s)", "raw uint8 (bytes/video)":
                         segments * raw_frame, "JPEG candidates (bytes/video)": per_video,
                         "JPEG bytes/frame": round(jpeg_bytes / (segments * CANDIDATES)),
                         "JPEG / raw": round(per_video / (segments * raw_frame), 3)})
            frames, _ = read_candidates(path, setup)
            sweep_frames.append(frames.reshape(-1, SIZE, SIZE, 3))
    frames = np.concatenate(sweep_frames)
    sweep = []
    for quality in QUALITIES:
        sizes, scores = [], []
        for frame in frames:
            data = encode_jpeg(frame, quality)
            sizes.append(len(data))
            scores.append(psnr(np.asarray(Image.open(io.BytesIO(data))), frame))
        sweep.append({"quality": quality, "bytes/frame": round(float(np.mean(sizes))),
                      "PSNR (dB)": round(float(np.mean(scores)), 2),
                      "3 candidates vs 1 raw frame": round(3 * float(np.mean(sizes)) / raw_frame, 3)})
    return rows, sweep


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args(argv)
    rows = timing_rows(args.videos, args.seconds)
    print(table(rows, list(rows[0])))
    print(f"\n{args.videos} videos of {args.seconds} s at 30 fps, 320x240 H.264, {FRAMES} segments at {SIZE} px; "
          f"candidates: {CANDIDATES} per segment, JPEG q{QUALITY}")
    sizes, sweep = size_rows(args.seconds)
    print("\n" + table(sizes, list(sizes[0])))
    print("\n" + table(sweep, list(sweep[0])))
    print("\ncontent: pan and zoom over matplotlib's grace_hopper.jpg, 320x240 H.264 (crf 17), cached at 224 px")
    save("frame_sampling", {"rows": rows, "cache_bytes": sizes, "jpeg_quality": sweep, "videos": args.videos,
                            "seconds": args.seconds, "candidates": CANDIDATES, "quality": QUALITY})
    return 0


if __name__ == "__main__":
    sys.exit(main())
