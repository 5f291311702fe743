"""Test galleries (`data.<dataset>.test_folds`): the test split cut into galleries of whole clusters, each query ranked
among its own gallery's videos, metrics over every query; one gallery is the whole split, as before."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import linked_root, tiny_params_dict, tiny_params_from

from hcmi import metrics
from hcmi.config import ConfigError
from hcmi.data.splits import RetrievalSplit
from hcmi.paths import Layout


def twin_split(pairs: int, captions: int = 2) -> RetrievalSplit:
    """A test split of `pairs` twin pairs (videos 2p and 2p+1, group pair-p), `captions` captions per video."""
    rows = []
    for p in range(pairs):
        for v in (2 * p, 2 * p + 1):
            for c in range(captions):
                rows.append({"video_id": f"v{v:03d}", "caption_id": f"v{v:03d}#{c}", "text": f"video {v} caption {c}",
                             "split": "test", "group_id": f"pair-{p:03d}", "twin_id": f"v{v ^ 1:03d}",
                             "twin_kind": "order"})
    table = pd.DataFrame(rows)
    return RetrievalSplit(table, set(table["video_id"]), "test")


def test_galleries_are_contiguous_blocks_of_whole_twin_pairs():
    split = twin_split(pairs=7)
    galleries = split.galleries(3)
    assert [len(columns) for _, columns in galleries] == [6, 4, 4]  # 7 pairs: 3 + 2 + 2, a pair never divided
    seen = np.concatenate([columns for _, columns in galleries])
    assert seen.tolist() == list(range(14))  # every video in exactly one gallery, in the split's order
    for rows, columns in galleries:
        assert set(split.text_video[rows]) == set(columns)  # a caption is in its video's gallery
        assert set(split.text_twin[rows]) <= set(columns)  # and so is its video's twin
    assert sorted(np.concatenate([rows for rows, _ in galleries]).tolist()) == list(range(len(split.captions)))


def test_one_gallery_is_the_whole_split_and_too_many_is_an_error():
    split = twin_split(pairs=4)
    [(rows, columns)] = split.galleries(1)
    assert rows.tolist() == list(range(16)) and columns.tolist() == list(range(8))
    assert len(split.galleries(4)) == 4
    with pytest.raises(ValueError, match="5 galleries asked of a split of 4 clusters"):
        split.galleries(5)


def test_videos_are_the_clusters_where_the_split_has_no_pairs():
    split = twin_split(pairs=3)
    split.captions = split.captions.drop(columns=["group_id"])
    assert [len(columns) for _, columns in split.galleries(6)] == [1] * 6  # each video its own cluster


def masked(scores: np.ndarray, galleries) -> np.ndarray:
    out = np.full_like(scores, -np.inf)
    for rows, columns in galleries:
        out[np.ix_(rows, columns)] = scores[np.ix_(rows, columns)]
    return out


def test_metrics_over_galleries_pool_each_gallery_ranked_on_its_own():
    """A text scored -inf against the other galleries' videos gets the rank it has within its own, in both directions,
    with and without dual softmax (its prior over the gallery's texts) and with the bank's prior; R@K and the mean
    rank over all queries are then the query-weighted means of each gallery's own."""
    split = twin_split(pairs=12)
    galleries = split.galleries(3)
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(len(split.captions), len(split.video_ids)))
    scores[np.arange(len(scores)), split.text_video] += 1.0  # better than chance, so ranks vary
    bank = rng.normal(size=(40, len(split.video_ids)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN arithmetic on the excluded pairs
        pooled = metrics.retrieval_metrics(masked(scores, galleries), split.text_video, dsl_temperature=10.0)
        pooled_bank = metrics.text_to_video_ranks(
            metrics.bank_dual_softmax(masked(scores, galleries), bank, 10.0), split.text_video)
    expected = {key: {"t": [], "v": []} for key in ("t2v", "v2t", "t2v_dsl", "v2t_dsl")}
    bank_ranks = np.empty(len(split.captions), dtype=np.int64)
    for rows, columns in galleries:
        local = {video: i for i, video in enumerate(columns)}
        own = np.array([local[v] for v in split.text_video[rows]])
        part = metrics.retrieval_metrics(scores[np.ix_(rows, columns)], own, dsl_temperature=10.0)
        for key in expected:
            expected[key]["t"].append(part[key])
        bank_ranks[rows] = metrics.text_to_video_ranks(
            metrics.bank_dual_softmax(scores[np.ix_(rows, columns)], bank[:, columns], 10.0), own)
    for key, parts in expected.items():
        weights = [p["queries"] for p in parts["t"]]
        assert pooled[key]["queries"] == sum(weights)
        for measure in ("R1", "R5", "R10", "MnR"):
            want = np.average([p[measure] for p in parts["t"]], weights=weights)
            assert pooled[key][measure] == pytest.approx(want, abs=1e-9), (key, measure)
    assert 0 < pooled["t2v"]["R1"] < 100 and pooled["t2v"]["R10"] == 100.0  # 8 videos a gallery: R@10 is certain
    np.testing.assert_array_equal(pooled_bank, bank_ranks)


@pytest.fixture(scope="module")
def untrained(tiny_data, tmp_path_factory):
    """An untrained HCMI checkpoint (every level scored) on the tiny benchmark."""
    from hcmi.steps import snapshot

    params, layout = tiny_data
    root = Layout(linked_root(tmp_path_factory.mktemp("galleries"), layout))
    snapshot.run(params, root, "synthetic", "hcmi")
    return root


def folds_params(folds: int):
    raw = tiny_params_dict()
    raw["data"]["synthetic"]["test_folds"] = folds
    return tiny_params_from(raw)


def test_evaluation_ranks_each_query_among_its_own_gallery(untrained):
    from hcmi.data.annotations import read_annotations
    from hcmi.data.frames import FrameCache
    from hcmi.model.backbone import tokenizer
    from hcmi.scoring import score_split
    from hcmi.steps.evaluate import evaluate, load_model

    root = untrained
    result, rankings, _ = evaluate(folds_params(2), root, "synthetic", "hcmi", 0)
    whole, whole_rankings, _ = evaluate(folds_params(1), root, "synthetic", "hcmi", 0)
    cache = FrameCache(root.frames("synthetic", "test"))
    split = RetrievalSplit(read_annotations(root.annotations("synthetic")), cache, "test")
    galleries = split.galleries(2)
    sizes = [len(columns) for _, columns in galleries]
    assert result["counts"]["galleries"] == 2 and result["counts"]["gallery_videos"] == sizes
    assert sum(sizes) == len(split.video_ids) and min(sizes) > 1
    assert whole["counts"]["galleries"] == 1 and whole["counts"]["gallery_videos"] == [len(split.video_ids)]

    model, checkpoint = load_model(root.model_file("synthetic", "hcmi", 0), torch.device("cpu"))
    _, final = score_split(model, split, cache, tokenizer(checkpoint["backbone"]["name"], checkpoint["max_words"]),
                           16, 64, torch.device("cpu"))
    ranks = rankings.set_index("caption_id")["rank"]
    whole_ranks = whole_rankings.set_index("caption_id")["rank"]
    ids = np.asarray(split.video_ids)
    checked = 0
    for rows, columns in galleries:
        for row in rows:
            caption = split.captions["caption_id"][row]
            top = rankings.set_index("caption_id").loc[caption, "top_videos"]
            assert set(top) <= set(ids[columns])  # nothing from another gallery is ever proposed
            own = final[row, split.text_video[row]]
            if np.isclose(final[row, columns], own, rtol=0, atol=1e-5).sum() > 1:
                continue  # a near-tie: its order is not this test's business
            assert ranks[caption] == int((final[row, columns] >= own).sum())
            assert ranks[caption] <= whole_ranks[caption]
            checked += 1
    assert checked >= len(split.captions) // 2


def test_more_galleries_than_twin_pairs_is_an_error_naming_the_parameter(untrained):
    from hcmi.steps.evaluate import evaluate

    pairs = tiny_params_dict()["data"]["synthetic"]["source"]["n_test"] // 2
    with pytest.raises(ConfigError, match=rf"data\.synthetic\.test_folds = {pairs + 1}: .* of {pairs} clusters"):
        evaluate(folds_params(pairs + 1), untrained, "synthetic", "hcmi", 0)


def test_the_report_says_what_a_query_was_ranked_among():
    from hcmi.report.tables import test_split_text

    text = test_split_text({"videos": 1000, "captions": 2000, "skipped_videos": 0, "galleries": 2,
                            "gallery_videos": [500, 500]})
    assert "1000 videos, 2000 query captions" in text and "2 galleries of 500 / 500 videos" in text
    assert "Chance text-to-video R@1: 0.20%" in text
    before = test_split_text({"videos": 500, "captions": 1000, "skipped_videos": 0})  # results without galleries
    assert "galler" not in before and "Chance text-to-video R@1: 0.20%" in before
