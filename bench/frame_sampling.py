"""Frame sampling speed, per core: hcmi's seek-based decord sampling of 12 frames (one VideoReader, one get_batch)
against decoding every frame and then picking 12 (the CLIP4Clip way: every frame decoded and converted to RGB), on
generated 30 s, 30 fps, 320x240 H.264 videos (MSR-VTT-like).

A seek lands on the keyframe before the wanted frame and decodes forward from there, so its cost grows with the
keyframe interval of the encoding; the table shows three: 1 s and 2 s (common in web video) and libx264's default of
250 frames (8.3 s).

    python bench/frame_sampling.py [--videos 3] [--seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, save, table  # noqa: E402

from hcmi.data.frames import Sampling, frame_indices, read_video, resize_and_crop  # noqa: E402
from hcmi.data.synthetic import write_mp4  # noqa: E402

FRAMES, SIZE = 12, 224


def make_videos(folder: Path, count: int, seconds: int, fps: int = 30, keyframe_interval: int | None = None
                ) -> list[Path]:
    """Moving gradients with noise: content that H.264 cannot compress to nothing."""
    rng = np.random.default_rng(0)
    paths = []
    yy, xx = np.mgrid[0:240, 0:320]
    for v in range(count):
        frames = np.empty((seconds * fps, 240, 320, 3), dtype=np.uint8)
        for t in range(len(frames)):
            base = (xx + 3 * t + 40 * v) % 256
            frames[t, ..., 0] = base
            frames[t, ..., 1] = (yy + 2 * t) % 256
            frames[t, ..., 2] = rng.integers(0, 40, size=(240, 320))
        path = folder / f"video{v}.mp4"
        write_mp4(path, frames, fps, keyframe_interval)
        paths.append(path)
    return paths


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


KEYFRAME_INTERVALS = {"1 s (30 frames)": 30, "2 s (60 frames)": 60, "libx264 default (250 frames)": 250}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args(argv)
    sampling = Sampling(max_frames=FRAMES, image_size=SIZE)
    rows = []
    for label, interval in KEYFRAME_INTERVALS.items():
        with tempfile.TemporaryDirectory() as tmp:
            paths = make_videos(Path(tmp), args.videos, args.seconds, keyframe_interval=interval)
            seek = best_time(lambda: [read_video(p, sampling) for p in paths], repeat=2)
            full = best_time(lambda: [decode_all_then_pick(p) for p in paths], repeat=1)
            same = bool(np.abs(read_video(paths[0], sampling)[0].astype(int)
                               - decode_all_then_pick(paths[0]).astype(int)).mean() < 8)
        rows.append({"keyframe interval": label, "seek (videos/s/core)": round(len(paths) / seek, 2),
                     "decode all (videos/s/core)": round(len(paths) / full, 2), "speed-up": round(full / seek, 1),
                     "same frames": same})
    print(table(rows, list(rows[0])))
    print(f"\n{args.videos} videos of {args.seconds} s at 30 fps, 320x240 H.264, {FRAMES} frames sampled at {SIZE} px")
    save("frame_sampling", {"rows": rows, "videos": args.videos, "seconds": args.seconds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
