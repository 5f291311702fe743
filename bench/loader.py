"""Training-loader throughput, per core: batches of 12 x 224 x 224 x 3 frames from hcmi's memory-mapped frame cache
against decoding each video on the fly (seek-based decord sampling + resize, i.e. a loader without a cache).

    python bench/loader.py [--videos 64] [--batch 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, save, table  # noqa: E402
from frame_sampling import make_videos  # noqa: E402

from hcmi.data.frames import FrameCache, Sampling, read_video, sample_split  # noqa: E402
from hcmi.data.loader import CachedVideos  # noqa: E402

FRAMES, SIZE = 12, 224


class DecodeOnTheFly(Dataset):
    def __init__(self, paths, sampling):
        self.paths, self.sampling = paths, sampling

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        frames, n = read_video(self.paths[i], self.sampling)
        mask = torch.zeros(FRAMES, dtype=torch.bool)
        mask[:n] = True
        return torch.from_numpy(frames), mask


def videos_per_second(dataset: Dataset, batch: int) -> float:
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0)
    seconds = best_time(lambda: sum(len(frames) for frames, _ in loader), repeat=2)
    return len(dataset) / seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sampling = Sampling(max_frames=FRAMES, image_size=SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        sources = make_videos(Path(tmp), min(args.videos, 8), args.seconds)
        paths = [sources[i % len(sources)] for i in range(args.videos)]
        ids = [f"v{i}" for i in range(args.videos)]
        sample_split(list(zip(ids, paths)), Path(tmp) / "cache", sampling, shard_size=16, max_skip_fraction=0.0)
        cached = videos_per_second(CachedVideos(FrameCache(Path(tmp) / "cache"), ids), args.batch)
        decoded = videos_per_second(DecodeOnTheFly(paths, sampling), args.batch)
    rows = [{"loader": "frame cache (hcmi, mmap)", "videos_per_s_per_core": round(cached, 1)},
            {"loader": "decode on the fly", "videos_per_s_per_core": round(decoded, 1)}]
    ratio = round(cached / decoded, 1)
    print(table(rows, ["loader", "videos_per_s_per_core"]))
    print(f"\nthe frame-cache loader is {ratio}x faster per core (batches of {args.batch} x {FRAMES} x {SIZE} x "
          f"{SIZE} x 3; cache shards in the page cache, as after the first epoch)")
    save("loader", {"rows": rows, "speedup": ratio, "videos": args.videos, "batch": args.batch})
    return 0


if __name__ == "__main__":
    sys.exit(main())
