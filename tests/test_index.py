"""The video index: an append-only store that survives interruption and refuses another model's vectors, a coarse
index that is exact or approximate by size, and two-stage search that equals exact scoring when it sees every video."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hcmi.index.store as store_module
from hcmi.errors import HcmiError
from hcmi.index import (CoarseIndex, IndexCorrupt, IndexMismatch, IndexMissing, VideoIndexError, VideoStore,
                        exhaustive_search, recall_at_k, search)
from hcmi.model.similarity import cosine, max_mean

DIM, FRAMES, CLIPS, WORDS, PHRASES = 32, 6, 2, 8, 2


def videos(n, seed, topics=8):
    """Videos in topics; each video's frames scattered around its own vector, clips and video pooled from them."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(topics, DIM, generator=torch.Generator().manual_seed(99)), dim=-1)
    own = F.normalize(centres[torch.randint(0, topics, (n,), generator=g)] + torch.randn(n, DIM, generator=g) * 0.2,
                      dim=-1)
    frame = F.normalize(own[:, None] + torch.randn(n, FRAMES, DIM, generator=g) * 0.1, dim=-1)
    frame_mask = torch.arange(FRAMES)[None] < torch.randint(3, FRAMES + 1, (n, 1), generator=g)
    frame = frame * frame_mask[..., None]
    clip = F.normalize(frame.view(n, CLIPS, FRAMES // CLIPS, DIM).sum(2), dim=-1)
    clip_mask = frame_mask.view(n, CLIPS, -1).any(2)
    return {"video": F.normalize((clip * clip_mask[..., None]).sum(1), dim=-1), "clip": clip, "clip_mask": clip_mask,
            "frame": frame, "frame_mask": frame_mask}


def queries(video_rep, targets, seed, noise=0.25):
    """Each query's words are noisy copies of its target video's frames."""
    g = torch.Generator().manual_seed(seed)
    n = len(targets)
    frames = video_rep["frame"][targets][:, torch.arange(WORDS) % 3]  # the first 3 frames are always valid
    word = F.normalize(frames + torch.randn(n, WORDS, DIM, generator=g) * noise, dim=-1)
    phrase = F.normalize(word.view(n, PHRASES, -1, DIM).sum(2), dim=-1)
    return {"sentence": F.normalize(word.sum(1), dim=-1), "phrase": phrase,
            "phrase_mask": torch.ones(n, PHRASES, dtype=torch.bool), "word": word,
            "word_mask": torch.ones(n, WORDS, dtype=torch.bool)}


def scorer(text, video):
    """HCMI's three levels with equal weights."""
    return (cosine(text["sentence"], video["video"])
            + max_mean(text["phrase"], text["phrase_mask"], video["clip"], video["clip_mask"])
            + max_mean(text["word"], text["word_mask"], video["frame"], video["frame_mask"])) / 3


def ids(prefix, n):
    return [f"{prefix}{i}" for i in range(n)]


def built(path, n, token_dtype="float16", seed=0):
    store = VideoStore.create(path, "model-a", {"dataset": "toy"}, token_dtype=token_dtype)
    store.append(ids("v", n), videos(n, seed))
    return store


def reference_top(text, store, k):
    """Every stored video scored in one call, ranked by score (ties to the lower row)."""
    rep = {key: torch.from_numpy(np.asarray(a, dtype=np.float32) if a.dtype.kind == "f" else np.array(a))
           for key, a in store.read(np.arange(store.rows)).items()}
    with torch.no_grad():
        scores = scorer(text, rep).numpy()
    order = np.lexsort((np.broadcast_to(np.arange(store.rows), scores.shape), -scores), axis=-1)[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def test_store_round_trip_keeps_arrays_and_ids_over_two_appends(tmp_path):
    first, second = videos(5, seed=1), videos(4, seed=2)
    store = VideoStore.create(tmp_path / "ix", "model-a", {"dataset": "toy"}, token_dtype="float32")
    store.append(ids("a", 5), first)
    store.append(ids("b", 4), second)
    again = VideoStore.open(tmp_path / "ix", "model-a")
    assert again.rows == 9 and again.ids == ids("a", 5) + ids("b", 4) and again.video_id(6) == "b1"
    assert again.metadata == {"dataset": "toy"}
    for key, array in again.read(np.arange(9)).items():
        np.testing.assert_array_equal(array, torch.cat([first[key], second[key]]).numpy())


def test_token_arrays_are_stored_as_float16_and_vectors_as_float32(tmp_path):
    store = built(tmp_path / "ix", 6)
    schema = store.schema
    assert schema["frame"][0] == np.float16 and schema["clip"][0] == np.float16
    assert schema["video"][0] == np.float32 and schema["frame_mask"][0] == np.bool_
    assert (tmp_path / "ix/frame.bin").stat().st_size == 6 * FRAMES * DIM * 2
    np.testing.assert_allclose(store.read([3])["frame"][0].astype(np.float32), videos(6, 0)["frame"][3].numpy(),
                               atol=1e-3)


def test_float16_tokens_leave_the_exact_ranking_unchanged(tmp_path):
    half, full = built(tmp_path / "half", 300), built(tmp_path / "full", 300, token_dtype="float32")
    text = queries(videos(300, 0), torch.arange(0, 300, 10), seed=3)
    (rows_half, scores_half), (rows_full, scores_full) = reference_top(text, half, 10), reference_top(text, full, 10)
    np.testing.assert_array_equal(rows_half[:, :5], rows_full[:, :5])
    assert np.abs(scores_half - scores_full).max() < 2e-3


def test_an_interrupted_append_reopens_at_the_last_committed_size(tmp_path, monkeypatch):
    store = built(tmp_path / "ix", 5)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module, "write_json", crash)  # data files written, row count never committed
    with pytest.raises(KeyboardInterrupt):
        store.append(ids("new", 3), videos(3, seed=7))
    monkeypatch.undo()
    assert (tmp_path / "ix/frame.bin").stat().st_size > 5 * FRAMES * DIM * 2  # the uncommitted rows are there
    again = VideoStore.open(tmp_path / "ix", "model-a")
    assert again.rows == 5 and again.missing(ids("new", 3)) == ids("new", 3)
    again.append(ids("new", 3), videos(3, seed=8))
    final = VideoStore.open(tmp_path / "ix", "model-a")
    assert final.rows == 8 and final.ids[5:] == ids("new", 3)
    np.testing.assert_allclose(final.read([7])["video"][0], videos(3, seed=8)["video"][2].numpy(), rtol=1e-6)


def test_a_foreign_model_fingerprint_is_refused(tmp_path):
    built(tmp_path / "ix", 3)
    with pytest.raises(IndexMismatch, match="built by model model-a, not by model-b") as err:
        VideoStore.open(tmp_path / "ix", "model-b")
    assert isinstance(err.value, HcmiError)


def test_missing_and_corrupt_directories_are_named(tmp_path):
    with pytest.raises(IndexMissing, match="no such directory"):
        VideoStore.open(tmp_path / "nowhere", "model-a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexMissing, match="store.json is missing"):
        VideoStore.open(tmp_path / "empty", "model-a")
    built(tmp_path / "ix", 4)
    with open(tmp_path / "ix/frame.bin", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(IndexCorrupt, match="frame.bin: has 100 bytes"):
        VideoStore.open(tmp_path / "ix", "model-a")
    (tmp_path / "ix/store.json").write_text("{not json")
    with pytest.raises(IndexCorrupt, match="store.json: unreadable"):
        VideoStore.open(tmp_path / "ix", "model-a")


def test_missing_returns_only_the_new_ids_once_each(tmp_path):
    store = built(tmp_path / "ix", 4)
    assert store.missing(["v2", "x", "v0", "y", "x"]) == ["x", "y"]
    with pytest.raises(VideoIndexError, match="already stored"):
        store.append(["v1"], videos(1, seed=5))


def test_an_append_with_other_keys_or_shapes_is_refused(tmp_path):
    store = built(tmp_path / "ix", 4)
    rep = videos(2, seed=5)
    with pytest.raises(ValueError, match="holds keys"):
        store.append(["p", "q"], {k: v for k, v in rep.items() if k != "clip"})
    with pytest.raises(ValueError, match="stored rows have shape"):
        store.append(["p", "q"], {**rep, "frame": rep["frame"][:, :4], "frame_mask": rep["frame_mask"][:, :4]})
    assert VideoStore.open(tmp_path / "ix", "model-a").rows == 4


@pytest.mark.parametrize("extra_depth", [0, 7])
def test_two_stage_equals_exact_scoring_when_depth_covers_every_video(tmp_path, extra_depth):
    store = built(tmp_path / "ix", 120)
    text = queries(videos(120, 0), torch.tensor([3, 50, 119]), seed=1)
    hits = search(text, store, CoarseIndex.for_store(store), scorer, depth=120 + extra_depth, k=15)
    want_rows, want_scores = reference_top(text, store, 15)
    assert [[video_id for video_id, _ in q] for q in hits] == [[f"v{r}" for r in q] for q in want_rows]
    np.testing.assert_allclose([[s for _, s in q] for q in hits], want_scores, rtol=1e-5, atol=1e-6)


def test_two_stage_reranks_exactly_the_coarse_candidates(tmp_path):
    store = built(tmp_path / "ix", 200)
    text = queries(videos(200, 0), torch.tensor([0, 77, 150]), seed=2, noise=0.6)
    hits = search(text, store, CoarseIndex.for_store(store), scorer, depth=30, k=10)
    vectors = store.read(np.arange(200), keys=["video"])["video"]
    all_rows, all_scores = reference_top(text, store, 200)
    for q, got in enumerate(hits):
        candidates = set(np.argsort(-(vectors @ text["sentence"][q].numpy()), kind="stable")[:30])
        want = [(f"v{r}", s) for r, s in zip(all_rows[q], all_scores[q]) if r in candidates][:10]
        assert [v for v, _ in got] == [v for v, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5, atol=1e-6)


def test_two_stage_recall_is_high_at_a_moderate_depth(tmp_path):
    store = built(tmp_path / "ix", 1000)
    text = queries(videos(1000, 0), torch.arange(0, 1000, 50), seed=4, noise=0.6)
    exact = exhaustive_search(text, store, scorer, k=10)
    coarse = CoarseIndex.for_store(store)
    assert recall_at_k(search(text, store, coarse, scorer, depth=100, k=10), exact, 10) >= 0.95
    assert recall_at_k(search(text, store, coarse, scorer, depth=10, k=10), exact, 10) < 0.95  # re-ranking matters


def test_coarse_index_is_exact_or_approximate_by_size_and_follows_appends(tmp_path):
    store = built(tmp_path / "ix", 300)
    assert CoarseIndex.for_store(store, exact_max=1000).kind == "flat"
    assert json.loads((tmp_path / "ix/coarse.json").read_text())["rows"] == 300
    store.append(ids("w", 50), videos(50, seed=9))
    extended = CoarseIndex.for_store(store, exact_max=1000)
    assert extended.kind == "flat" and extended.rows == 350
    approximate = CoarseIndex.for_store(store, exact_max=320)  # now above the threshold: rebuilt as IVF
    assert approximate.kind == "ivf" and approximate.rows == 350
    assert CoarseIndex.load(tmp_path / "ix/coarse.faiss", store).kind == "ivf"
    scores, rows = approximate.search(store.read([5], keys=["video"])["video"], 5)
    assert rows[0, 0] == 5 and scores[0, 0] == pytest.approx(1.0, abs=0.02)


def test_search_refuses_a_coarse_index_that_misses_appended_videos(tmp_path):
    store = built(tmp_path / "ix", 50)
    coarse = CoarseIndex.for_store(store)
    store.append(ids("w", 5), videos(5, seed=9))
    with pytest.raises(VideoIndexError, match="covers 50 of 55 videos"):
        search(queries(videos(50, 0), torch.tensor([1]), seed=0), store, coarse, scorer, depth=10, k=5)


def test_long_searches_unmap_what_they_read(tmp_path, monkeypatch):
    store = built(tmp_path / "ix", 40)
    released = []
    monkeypatch.setattr(store_module, "RELEASE_AFTER_BYTES", 3 * store_module.FAULT_AROUND_BYTES * 5)
    monkeypatch.setattr(VideoStore, "release", lambda self: released.append(self._read_bytes) or None)
    store.read([0, 1])  # 2 rows x 5 keys, each possibly mapping a fault-around window: below the limit
    assert not released
    store.read([2, 3])
    assert len(released) == 1


def test_tuning_nprobe_reaches_the_asked_recall_and_is_kept(tmp_path):
    store = built(tmp_path / "ix", 800)
    coarse = CoarseIndex.build(store, kind="ivf")
    text = queries(videos(800, 0), torch.arange(0, 800, 40), seed=6, noise=1.0)
    recall = coarse.tune_nprobe(store, text["sentence"], depth=20, target=0.95)
    vectors = store.read(np.arange(800), keys=["video"])["video"]
    exact = np.argsort(-(text["sentence"].numpy() @ vectors.T), axis=1, kind="stable")[:, :20]
    _, rows = coarse.search(text["sentence"], 20)
    measured = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(rows, exact)])
    assert recall >= 0.95 and measured == pytest.approx(recall, abs=0.02)
    coarse.save(tmp_path / "ix/coarse.faiss")
    assert CoarseIndex.load(tmp_path / "ix/coarse.faiss", store).nprobe == coarse.nprobe
