"""Training-loader throughput, per core: batches of 12 x 224 x 224 x 3 frames from hcmi's JPEG frame cache (3
candidates per segment) against decoding each video on the fly (seek-based decord sampling + resize, i.e. a loader
without a cache). The cache is read the way training reads it (a random candidate per segment, one view and two
views, decoding every frame or keeping decoded frames between epochs) and the way evaluation reads it (the fixed
middle candidate). Both sides read the same videos: a camera panning across and zooming into a natural photo
(bench/frame_sampling.py), so JPEG sizes are realistic. Also the JPEG decoders available here, per frame: Pillow (as
the cache calls it, and through Image.open) and torchvision.

    python bench/loader.py [--videos 32] [--seconds 10] [--batch 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, save, table  # noqa: E402
from frame_sampling import photo_video  # noqa: E402

from hcmi.data.frames import FrameCache, Sampling, decode_jpeg_into, read_video, sample_split  # noqa: E402
from hcmi.data.loader import CachedVideos, CaptionVideoPairs, epoch_loader  # noqa: E402

FRAMES, SIZE, CANDIDATES, QUALITY = 12, 224, 3, 90


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


def interleaved_rates(loaders: dict[str, DataLoader], n_videos: int, rounds: int) -> dict[str, float]:
    """Videos per second of each loader, best of `rounds`; the loaders take turns within each round, so that load
    from other processes on a shared machine hits them alike."""
    def one_pass(loader):
        return sum(len(batch[0]) for batch in loader)

    best = {name: float("inf") for name in loaders}
    for loader in loaders.values():
        one_pass(loader)  # warm-up: page cache, lazily opened shards
    for _ in range(rounds):
        for name, loader in loaders.items():
            best[name] = min(best[name], best_time(lambda: one_pass(loader), repeat=1, warmup=0))
    return {name: n_videos / seconds for name, seconds in best.items()}


def training_loader(cache: FrameCache, ids: list[str], views: int, batch: int) -> DataLoader:
    pairs = CaptionVideoPairs(cache, ids, [f"caption of {v}" for v in ids],
                              lambda texts: torch.zeros(len(texts), 4, dtype=torch.long), seed=0, views=views)
    return epoch_loader(pairs, batch, seed=0, epoch=0)


def decoder_rows(cache: FrameCache, ids: list[str]) -> list[dict]:
    """Per-frame decode time of the cached JPEGs: Pillow as the cache uses it, Pillow through Image.open, and
    torchvision (whose image decoding is deprecated since 0.29)."""
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg

    shard, first, _ = cache._rows[ids[0]]
    data, offsets = cache._shard(shard)
    jpegs = [np.array(data[offsets[k] : offsets[k + 1]]) for k in range(len(offsets) - 1)]
    out = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    target = torch.from_numpy(out)

    def with_pillow():
        for jpeg in jpegs:
            decode_jpeg_into(out, jpeg)

    def with_image_open():
        for jpeg in jpegs:
            with Image.open(io.BytesIO(memoryview(jpeg))) as image:
                out[...] = np.asarray(image)

    def with_torchvision():
        for jpeg in jpegs:
            target.copy_(decode_jpeg(torch.from_numpy(jpeg), mode=ImageReadMode.RGB).permute(1, 2, 0))

    decoders = {"Pillow (libjpeg-turbo, stream to decoder), used": with_pillow,
                "Pillow through Image.open": with_image_open, "torchvision.io.decode_jpeg": with_torchvision}
    times = dict.fromkeys(decoders, float("inf"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for _ in range(5):  # taking turns, as the loaders do
            for name, fn in decoders.items():
                times[name] = min(times[name], best_time(fn, repeat=1) / len(jpegs))
    return [{"decoder": name, "ms/frame": round(1e3 * t, 3)} for name, t in times.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over each loader, taking turns")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sampling = Sampling(max_frames=FRAMES, image_size=SIZE, candidates=CANDIDATES, jpeg_quality=QUALITY)
    batch = min(args.batch, args.videos)
    with tempfile.TemporaryDirectory() as tmp:
        sources = [photo_video(Path(tmp) / f"photo{i}.mp4", args.seconds, phase=i / 8)
                   for i in range(min(args.videos, 8))]
        paths = [sources[i % len(sources)] for i in range(args.videos)]
        ids = [f"v{i}" for i in range(args.videos)]
        sample_split(list(zip(ids, paths)), Path(tmp) / "cache", sampling, shard_size=16, max_skip_fraction=0.0)
        cache = FrameCache(Path(tmp) / "cache")
        measured = interleaved_rates({
            "frame cache, training draw (1 view)": training_loader(cache, ids, 1, batch),
            "frame cache, training draw (2 views)": training_loader(cache, ids, 2, batch),
            "frame cache, training draw (2 views), decoded frames kept (train.decoded_frames_mb)":
                training_loader(FrameCache(Path(tmp) / "cache", keep_decoded_mb=args.videos * FRAMES * CANDIDATES
                                           * SIZE * SIZE * 3 / 2**20), ids, 2, batch),
            "frame cache, evaluation (fixed choice)": DataLoader(CachedVideos(cache, ids), batch_size=batch),
            "decode on the fly": DataLoader(DecodeOnTheFly(paths, sampling), batch_size=batch),
        }, args.videos, args.rounds)
        decoders = decoder_rows(cache, ids)
    rows = [{"loader": name, "videos_per_s_per_core": round(rate, 1)} for name, rate in measured.items()]
    ratio = round(measured["frame cache, training draw (1 view)"] / measured["decode on the fly"], 1)
    kept = round(measured["frame cache, training draw (2 views), decoded frames kept (train.decoded_frames_mb)"]
                 / measured["frame cache, training draw (2 views)"], 1)
    print(table(rows, ["loader", "videos_per_s_per_core"]))
    print("\n" + table(decoders, ["decoder", "ms/frame"]))
    print(f"\nthe frame-cache loader (training draw, one view) is {ratio}x faster per core than decoding on the fly "
          f"(batches of {batch} x {FRAMES} x {SIZE} x {SIZE} x 3, JPEG q{QUALITY}, {CANDIDATES} candidates; cache "
          f"shards in the page cache, as after the first epoch; videos {args.seconds} s, 320x240, 30 fps)")
    print(f"keeping the decoded frames (every frame read once before, as from the second epoch on when they fit) "
          f"reads {kept}x as fast as decoding them again")
    save("loader", {"rows": rows, "speedup": ratio, "kept_speedup": kept, "decoders": decoders,
                    "videos": args.videos, "batch": batch})
    return 0


if __name__ == "__main__":
    sys.exit(main())
