import io

import numpy as np
import pandas as pd
import pytest

from hcmi.data import synthetic, videos
from hcmi.data.frames import (FrameCache, FrameCacheError, Sampling, TooManySkipped, candidate_indices, frame_indices,
                              read_candidates, read_video, resize_and_crop, sample_split)


def sampling(max_frames=8, size=32, candidates=3, quality=90):
    return Sampling(max_frames=max_frames, image_size=size, candidates=candidates, jpeg_quality=quality)


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


def numbered_video(path, n_frames, keyframe_interval):
    """A video whose every frame differs visibly from its neighbours (a scrolling texture and a frame-number
    patch), so a frame read from the wrong position cannot pass for the right one."""
    rng = np.random.default_rng(1)
    texture = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    frames = np.stack([np.roll(texture, t, axis=1) for t in range(n_frames)])
    frames[:, :8, :8] = ((np.arange(n_frames) * 37) % 256)[:, None, None, None]
    synthetic.write_mp4(path, frames, fps=30, keyframe_interval=keyframe_interval)


def decode_every_frame(path) -> np.ndarray:
    """The reference: PyAV decodes the whole stream front to back, no seeking."""
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_frame_indices_are_uniform_segment_centres():
    assert frame_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert frame_indices(3, 8).tolist() == [0, 1, 2]


def test_candidates_sit_inside_their_segments_and_the_middle_one_is_the_centre():
    assert candidate_indices(100, 4, 3).tolist() == [[4, 12, 20], [29, 37, 45], [54, 62, 70], [79, 87, 95]]
    for n_total in (13, 100, 901):
        for segments in (4, 12):
            for candidates in (1, 3, 5):
                picks = candidate_indices(n_total, segments, candidates)
                assert picks.shape == (segments, candidates)
                centres = ((np.arange(segments) + 0.5) * n_total / segments).astype(np.int64)
                assert picks[:, candidates // 2].tolist() == centres.tolist()
                starts = np.arange(segments) * n_total // segments
                ends = -(-(np.arange(segments) + 1) * n_total // segments)
                assert ((picks >= starts[:, None]) & (picks < ends[:, None])).all()
                if n_total >= candidates * segments:  # a segment of at least C frames: C distinct frames
                    assert (np.diff(picks, axis=1) > 0).all()


def test_short_videos_get_one_segment_per_frame_with_every_candidate_that_frame():
    assert candidate_indices(3, 8, 3).tolist() == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]


@pytest.mark.parametrize("keyframe_interval", [6, None], ids=["keyframe-every-6", "libx264-default-250"])
def test_seek_sampling_returns_exactly_the_frames_of_a_full_decode(tmp_path, keyframe_interval):
    path = tmp_path / "numbered.mp4"
    numbered_video(path, 300, keyframe_interval)
    every = decode_every_frame(path)
    setup = sampling(max_frames=7, size=32, candidates=3)
    frames, n_valid = read_candidates(path, setup)
    picks = candidate_indices(len(every), 7, 3)
    assert n_valid == 7 and frames.shape == (7, 3, 32, 32, 3)
    expected = resize_and_crop(every[picks.ravel()], 32).reshape(frames.shape)
    np.testing.assert_array_equal(frames, expected)
    centres, _ = read_video(path, setup)
    np.testing.assert_array_equal(centres, expected[:, 1])


def test_read_video_resizes_and_centre_crops(video_folder):
    frames, n = read_video(video_folder / "good1.mp4", sampling(max_frames=6, size=32))
    assert n == 6 and frames.shape == (6, 32, 32, 3) and frames.dtype == np.uint8


def test_cache_holds_every_candidate_as_jpeg_close_to_the_decoded_frames(tmp_path, video_folder):
    pairs, _ = videos.match(["good1", "good2"], video_folder)
    setup = sampling(max_frames=4, size=32, candidates=3, quality=95)
    sample_split(pairs, tmp_path / "c", setup, shard_size=8, max_skip_fraction=0.0)
    cache = FrameCache(tmp_path / "c")
    assert cache.n_candidates == 3 and cache.frame_shape == (4, 32, 32, 3) and len(cache) == 2 and "good2" in cache
    truth, _ = read_candidates(video_folder / "good2.mp4", setup)
    for c in range(3):
        frames, n_valid = cache.frames("good2", np.full(4, c))
        assert n_valid == 4
        error = np.abs(frames.astype(int) - truth[:, c].astype(int)).mean()
        others = np.abs(frames.astype(int) - truth[:, (c + 1) % 3].astype(int)).mean()
        assert error < 12 < others, "each choice reads its own candidate (random frames: JPEG is lossy)"
    fixed, _ = cache.frames("good2")
    np.testing.assert_array_equal(fixed, cache.frames("good2", np.ones(4, dtype=int))[0])
    mixed, _ = cache.frames("good2", np.array([0, 2, 1, 0]))
    np.testing.assert_array_equal(mixed[1], cache.frames("good2", np.full(4, 2))[0][1])
    with pytest.raises(ValueError, match="candidate numbers"):
        cache.frames("good2", np.full(4, 3))


def test_kept_frames_are_the_decoded_ones_and_stay_within_their_memory(tmp_path, video_folder, monkeypatch):
    from hcmi.data import frames as frames_module

    pairs, _ = videos.match(["good1", "good2"], video_folder)
    sample_split(pairs, tmp_path / "c", sampling(max_frames=4, size=32, candidates=3), shard_size=8,
                 max_skip_fraction=0.0)
    decoded = []
    decode = frames_module.decode_jpeg_into
    monkeypatch.setattr(frames_module, "decode_jpeg_into", lambda out, data: decoded.append(1) or decode(out, data))
    plain = FrameCache(tmp_path / "c")
    keeping = FrameCache(tmp_path / "c", keep_decoded_mb=100)
    six_frames = FrameCache(tmp_path / "c", keep_decoded_mb=6 * 32 * 32 * 3 / 2**20)
    reads = [(video, np.array(choice)) for choice in ([0, 1, 2, 0], [2, 1, 0, 0])
             for video in ("good1", "good2")] * 2  # twice 4 reads of 4 frames each: 12 distinct frames
    truth = [plain.frames(video, choice)[0] for video, choice in reads]
    # the six-frame cache keeps the first 6 frames it decodes (good1's 4 of choice a, good2's segments 0 and 1): of
    # the 32 reads, 3 in the first pass (after they were kept) and 9 in the second are copies: 32 - 3 - 9 decodes
    for cache, decodes in ((keeping, 12), (six_frames, 20)):
        decoded.clear()
        for (video, choice), expected in zip(reads, truth):
            np.testing.assert_array_equal(cache.frames(video, choice)[0], expected)
        assert len(decoded) == decodes


def test_jpeg_files_in_a_shard_are_plain_jpegs(tmp_path, video_folder):
    from PIL import Image

    pairs, _ = videos.match(["good0"], video_folder)
    sample_split(pairs, tmp_path / "c", sampling(max_frames=4, size=32), shard_size=8, max_skip_fraction=0.0)
    blob = (tmp_path / "c" / "shards" / "shard-00000.jpg.bin").read_bytes()
    offsets = np.load(tmp_path / "c" / "shards" / "shard-00000.offsets.npy")
    assert len(offsets) == 4 * 3 + 1 and offsets[-1] == len(blob)
    image = Image.open(io.BytesIO(blob[offsets[5] : offsets[6]]))
    assert image.format == "JPEG" and image.size == (32, 32)


def test_bad_files_are_skipped_and_listed_with_reasons(tmp_path, video_folder):
    ids = ["good0", "good1", "good2", "good3", "truncated", "empty", "notes", "absent"]
    pairs, missing = videos.match(ids, video_folder)
    assert missing == ["absent"]
    out = tmp_path / "cache"
    index = sample_split(pairs, out, sampling(8, 32), shard_size=3, max_skip_fraction=0.6)
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
    index = sample_split(pairs, tmp_path / "c", sampling(16, 32), shard_size=4, max_skip_fraction=0.0)
    assert index.loc[0, "n_frames"] == 12
    cache = FrameCache(tmp_path / "c")
    frames, n_valid = cache.frames("good0", np.full(16, 2))
    assert n_valid == 12 and not frames[12:].any() and frames[:12].any()
    np.testing.assert_array_equal(frames, cache.frames("good0", np.zeros(16, dtype=int))[0])


def test_too_many_skipped_fails_with_the_list_and_writes_no_index(tmp_path, video_folder):
    pairs, _ = videos.match(["good0", "empty", "notes"], video_folder)
    with pytest.raises(TooManySkipped) as error:
        sample_split(pairs, tmp_path / "c", sampling(4, 32), shard_size=4, max_skip_fraction=0.01)
    assert "empty" in str(error.value) and "notes" in str(error.value)
    assert (tmp_path / "c" / "skipped.csv").exists()
    assert not (tmp_path / "c" / "index.parquet").exists()
    with pytest.raises(FrameCacheError, match="index.parquet"):
        FrameCache(tmp_path / "c")


def test_resume_keeps_finished_shards_and_redoes_changed_ones(tmp_path, video_folder):
    pairs, _ = videos.match(["good0", "good1", "good2", "good3"], video_folder)
    out = tmp_path / "c"
    sample_split(pairs, out, sampling(4, 32), shard_size=2, max_skip_fraction=0.0)
    shard0, shard1 = out / "shards" / "shard-00000.jpg.bin", out / "shards" / "shard-00001.jpg.bin"
    stamp0 = shard0.stat().st_mtime_ns
    (out / "shards" / "shard-00001.json").unlink()  # as if interrupted while writing the second shard
    (out / "index.parquet").unlink()
    sample_split(pairs, out, sampling(4, 32), shard_size=2, max_skip_fraction=0.0)
    assert shard0.stat().st_mtime_ns == stamp0, "a finished shard is reused"
    assert (out / "shards" / "shard-00001.json").exists() and shard1.exists()
    for changed in (sampling(5, 32), sampling(4, 32, candidates=1), sampling(4, 32, quality=70)):
        stamp0 = shard0.stat().st_mtime_ns
        sample_split(pairs, out, changed, shard_size=2, max_skip_fraction=0.0)
        assert shard0.stat().st_mtime_ns != stamp0, f"other sampling parameters redo the shard: {changed}"
    cache = FrameCache(out)
    assert cache.frames("good3")[0].shape[0] == 4 and cache.n_candidates == 3


def test_empty_split_gives_an_empty_cache(tmp_path):
    index = sample_split([], tmp_path / "c", sampling(4, 32), shard_size=2, max_skip_fraction=0.0)
    cache = FrameCache(tmp_path / "c")
    assert len(index) == 0 and len(cache) == 0 and cache.frame_shape == (4, 32, 32, 3)
