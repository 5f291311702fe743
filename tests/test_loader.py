"""The training and evaluation loaders over the frame cache: random candidate draws that are pure functions of
(seed, epoch, item, view), exact resume, worker-count independence, and grouped batches."""

import numpy as np
import pytest
import torch

from hcmi.data import synthetic
from hcmi.data.frames import FrameCache, Sampling, sample_split
from hcmi.data.loader import (CachedVideos, CaptionVideoPairs, EpochBatches, draw_choice, epoch_loader,
                              epoch_order)

SEGMENTS, CANDIDATES = 4, 3


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Ten videos of random frames (every frame differs), cached with three candidates per segment."""
    root = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(10):
        path = root / "videos" / f"v{i}.mp4"
        synthetic.write_mp4(path, rng.integers(0, 255, size=(24, 32, 32, 3), dtype=np.uint8), fps=8)
        pairs.append((f"v{i}", path))
    setup = Sampling(max_frames=SEGMENTS, image_size=24, candidates=CANDIDATES, jpeg_quality=90)
    sample_split(pairs, root / "cache", setup, shard_size=4, max_skip_fraction=0.0)
    return FrameCache(root / "cache")


def tokenize(texts):
    return torch.tensor([[len(t), sum(map(ord, t)) % 1000] for t in texts])


def pairs_dataset(cache, seed=0, views=2, groups=None, extra_ids=()):
    ids = [f"v{i % 10}" for i in range(20)] + list(extra_ids)  # two captions per video
    texts = [f"caption {i}" for i in range(len(ids))]
    return CaptionVideoPairs(cache, ids, texts, tokenize, seed=seed, views=views, groups=groups)


def all_batches(loader):
    return [(frames.clone(), mask.clone(), tokens.clone()) for frames, mask, tokens, _ in loader]


def assert_same_batches(first, second):
    assert len(first) == len(second) > 0
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_draws_are_a_pure_function_of_their_arguments():
    first = draw_choice(7, 2, 5, 0, segments=12, candidates=3)
    assert first.shape == (12,) and first.min() >= 0 and first.max() < 3
    np.testing.assert_array_equal(first, draw_choice(7, 2, 5, 0, segments=12, candidates=3))
    for other in ((8, 2, 5, 0), (7, 3, 5, 0), (7, 2, 6, 0), (7, 2, 5, 1)):
        assert not np.array_equal(first, draw_choice(*other, segments=12, candidates=3)), other


def test_the_two_views_of_a_video_differ(cache):
    dataset = pairs_dataset(cache)
    frames, mask, tokens, item = dataset[(3, 0)]
    assert item == 3
    assert frames.shape == (2, SEGMENTS, 24, 24, 3) and frames.dtype == torch.uint8
    assert mask.all() and tokens.tolist() == tokenize(["caption 3"])[0].tolist()
    differing = 0
    for item in range(len(dataset)):
        frames = dataset[(item, 0)][0]
        first, second = dataset.choices(item, 0)
        for s in range(SEGMENTS):  # a segment differs exactly where the views drew different candidates
            assert torch.equal(frames[0, s], frames[1, s]) == (first[s] == second[s])
        differing += not torch.equal(frames[0], frames[1])
    assert differing >= len(dataset) - 2


def test_draws_differ_across_epochs_and_repeat_for_the_same_seed(cache):
    dataset, again, other_seed = pairs_dataset(cache), pairs_dataset(cache), pairs_dataset(cache, seed=1)
    epochs_differ = seeds_differ = 0
    for item in range(len(dataset)):
        frames = dataset[(item, 0)][0]
        torch.testing.assert_close(frames, again[(item, 0)][0], rtol=0, atol=0)
        epochs_differ += not torch.equal(frames, dataset[(item, 1)][0])
        seeds_differ += not torch.equal(frames, other_seed[(item, 0)][0])
    assert epochs_differ >= len(dataset) - 2 and seeds_differ >= len(dataset) - 2


def test_one_view_and_a_single_candidate(cache):
    frames = pairs_dataset(cache, views=1)[(0, 0)][0]
    assert frames.shape == (1, SEGMENTS, 24, 24, 3)


def test_a_resumed_loader_continues_the_uninterrupted_sequence_draws_included(cache):
    dataset = pairs_dataset(cache)
    straight = all_batches(epoch_loader(dataset, 4, seed=3, epoch=1))
    resumed = all_batches(epoch_loader(dataset, 4, seed=3, epoch=1, start_batch=2))
    assert len(straight) == 5
    assert_same_batches(straight[2:], resumed)


def test_worker_processes_give_the_same_batches(cache):
    dataset = pairs_dataset(cache)
    assert_same_batches(all_batches(epoch_loader(dataset, 4, seed=3, epoch=2, workers=0)),
                        all_batches(epoch_loader(dataset, 4, seed=3, epoch=2, workers=2)))


def test_evaluation_always_reads_the_middle_candidate(cache):
    videos = CachedVideos(cache, ["v1", "v4"])
    frames, mask = videos[1]
    assert frames.shape == (SEGMENTS, 24, 24, 3) and mask.all()
    torch.testing.assert_close(frames, videos[1][0], rtol=0, atol=0)
    middle = cache.frames("v4", np.full(SEGMENTS, CANDIDATES // 2))[0]
    np.testing.assert_array_equal(frames.numpy(), middle)
    assert not np.array_equal(middle, cache.frames("v4", np.zeros(SEGMENTS, dtype=int))[0])


def test_pairs_without_a_cached_video_are_dropped_with_their_group(cache):
    groups = [f"g{i % 5}" for i in range(20)] + ["lost"]
    dataset = pairs_dataset(cache, groups=groups, extra_ids=["missing"])
    assert dataset.dropped == 1 and len(dataset) == 20 and dataset.groups == groups[:20]


def contiguous_runs(sequence) -> int:
    return 1 + sum(a != b for a, b in zip(sequence, sequence[1:]))


def test_grouped_batches_keep_families_together_and_cover_every_item_once():
    rng = np.random.default_rng(0)
    groups = [f"family-{g}" for g in rng.integers(0, 40, size=120)]  # families of uneven sizes, items scattered
    for epoch in range(3):
        batches = list(EpochBatches(120, 8, seed=5, epoch=epoch, groups=groups))
        assert len(batches) == 15 and all(e == epoch for batch in batches for _, e in batch)
        order = [item for batch in batches for item, _ in batch]
        assert sorted(order) == list(range(120)), "every item once per epoch"
        sequence = [groups[i] for i in order]
        assert contiguous_runs(sequence) == len(set(groups)), "each family is one contiguous run"
    orders = [epoch_order(120, 5, epoch, groups) for epoch in range(2)]
    assert not np.array_equal(*orders)
    family = [i for i, g in enumerate(groups) if g == groups[0]]
    within = [[i for i in order if i in family] for order in orders]
    assert sorted(within[0]) == family and len({tuple(w) for w in within}) == 2, "order within a family is drawn"


def test_items_without_a_group_are_families_of_one_and_no_groups_is_todays_shuffle():
    order = epoch_order(6, 1, 0, ["a", None, "a", None, "b", "b"])
    assert sorted(order) == list(range(6))
    assert contiguous_runs([{0: "a", 2: "a", 4: "b", 5: "b"}.get(i, i) for i in order]) == 4
    np.testing.assert_array_equal(epoch_order(50, 1, 4), np.random.default_rng([1, 4]).permutation(50))
    with pytest.raises(ValueError, match="group ids"):
        epoch_order(5, 0, 0, ["a"])


def test_ranks_take_contiguous_slices_of_the_same_global_batches():
    groups = [i // 3 for i in range(48)]
    whole = list(EpochBatches(48, 8, seed=2, epoch=0, groups=groups))
    ranks = [list(EpochBatches(48, 8, seed=2, epoch=0, rank=r, world_size=2, groups=groups)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == whole


def test_grouped_batches_keep_families_together_but_not_a_video_beside_itself():
    from hcmi.data.loader import caption_rounds

    videos = [f"v{family}-{member}" for family in range(30) for member in range(3) for _ in range(2)]  # 2 captions
    families = [v.split("-")[0] for v in videos]
    assert caption_rounds(["a", "b", "a", "a"]) == [0, 0, 1, 2]
    units = list(zip(families, caption_rounds(videos)))

    def shares(groups):
        together = beside_itself = 0
        for batch in EpochBatches(len(videos), 12, seed=1, epoch=0, groups=groups):
            ids = [videos[item] for item, _ in batch]
            beside_itself += len(ids) - len(set(ids))
            together += sum(len({i for i in ids if i.split("-")[0] == f}) - 1 for f in {i.split("-")[0] for i in ids})
        return together, beside_itself

    by_family, by_unit = shares(families), shares(units)
    assert by_unit[0] > 0.5 * by_family[0], "family members still share batches"
    assert by_unit[1] < 0.2 * by_family[1], "a video's two captions rarely share a batch"
