import numpy as np
import pandas as pd
import pytest

from hcmi.data import synthetic, videos
from hcmi.data.frames import FrameCache, Sampling, TooManySkipped, frame_indices, read_video, sample_split


@pytest.fixture
def video_folder(tmp_path):
    """Four good MP4s, plus a truncated MP4, a zero-byte file and a text file named .mp4."""
    folder = tmp_path / "videos"
    rng = np.random.default_rng(0)
    for i in range(4):
        frames = rng.integers(0, 255, size=(12 + i, 40, 56, 3), dtype=np.uint8)
        synthetic.write_mp4(folder / f"good{i}.mp4", frames, fps=8)
    data = (folder / "good0.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("this is not a video\n")
    return folder


def test_frame_indices_are_uniform_segment_centres():
    assert frame_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert frame_indices(3, 8).tolist() == [0, 1, 2]


def test_read_video_resizes_and_centre_crops(video_folder):
    frames, n = read_video(video_folder / "good1.mp4", Sampling(max_frames=6, image_size=32))
    assert n == 6 and frames.shape == (6, 32, 32, 3) and frames.dtype == np.uint8


def test_bad_files_are_skipped_and_listed_with_reasons(tmp_path, video_folder):
    ids = ["good0", "good1", "good2", "good3", "truncated", "empty", "notes", "absent"]
    pairs, missing = videos.match(ids, video_folder)
    assert missing == ["absent"]
    out = tmp_path / "cache"
    index = sample_split(pairs, out, Sampling(8, 32), shard_size=3, max_skip_fraction=0.6)
    assert sorted(index["video_id"]) == ["good0", "good1", "good2", "good3"]
    skipped = pd.read_csv(out / "skipped.csv").set_index("video_id")
    assert sorted(skipped.index) == ["absent", "empty", "notes", "truncated"]
    assert "0 bytes" in skipped.loc["empty", "reason"]
    assert "no video file" in skipped.loc["absent", "reason"]
    assert skipped.loc["truncated", "reason"] and skipped.loc["notes", "reason"]
    cache = FrameCache(out)
    frames, n_valid = cache.frames("good2")
    assert frames.shape == (8, 32, 32, 3) and n_valid == 8
    assert cache.frame_shape == (8, 32, 32, 3)


def test_short_videos_are_padded_and_counted(tmp_path, video_folder):
    pairs, _ = videos.match(["good0"], video_folder)
    index = sample_split(pairs, tmp_path / "c", Sampling(16, 32), shard_size=4, max_skip_fraction=0.0)
    assert index.loc[0, "n_frames"] == 12
    frames, n_valid = FrameCache(tmp_path / "c").frames("good0")
    assert n_valid == 12 and not frames[12:].any()


def test_too_many_skipped_fails_with_the_list_and_writes_no_index(tmp_path, video_folder):
    pairs, _ = videos.match(["good0", "empty", "notes"], video_folder)
    with pytest.raises(TooManySkipped) as error:
        sample_split(pairs, tmp_path / "c", Sampling(4, 32), shard_size=4, max_skip_fraction=0.01)
    assert "empty" in str(error.value) and "notes" in str(error.value)
    assert (tmp_path / "c" / "skipped.csv").exists()
    assert not (tmp_path / "c" / "index.parquet").exists()


def test_resume_keeps_finished_shards_and_redoes_changed_ones(tmp_path, video_folder):
    pairs, _ = videos.match(["good0", "good1", "good2", "good3"], video_folder)
    out = tmp_path / "c"
    sample_split(pairs, out, Sampling(4, 32), shard_size=2, max_skip_fraction=0.0)
    shard0, shard1 = out / "shards" / "shard-00000.npy", out / "shards" / "shard-00001.npy"
    stamp0, stamp1 = shard0.stat().st_mtime_ns, shard1.stat().st_mtime_ns
    shard1.unlink()  # as if interrupted while writing the second shard
    (out / "index.parquet").unlink()
    sample_split(pairs, out, Sampling(4, 32), shard_size=2, max_skip_fraction=0.0)
    assert shard0.stat().st_mtime_ns == stamp0, "a finished shard is reused"
    assert shard1.exists()
    sample_split(pairs, out, Sampling(5, 32), shard_size=2, max_skip_fraction=0.0)
    assert shard0.stat().st_mtime_ns != stamp0, "other sampling parameters redo the shard"
    assert FrameCache(out).frames("good3")[0].shape[0] == 5


def test_empty_split_gives_an_empty_cache(tmp_path):
    index = sample_split([], tmp_path / "c", Sampling(4, 32), shard_size=2, max_skip_fraction=0.0)
    assert len(index) == 0 and len(FrameCache(tmp_path / "c")) == 0
