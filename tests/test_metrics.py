import numpy as np
import pytest

from hcmi import metrics


def test_ranks_and_recall_by_hand():
    # 3 texts x 3 videos; text i belongs to video i
    sim = np.array([[0.9, 0.1, 0.2],
                    [0.8, 0.7, 0.1],   # its video is second best -> rank 2
                    [0.1, 0.2, 0.3]])
    ranks = metrics.text_to_video_ranks(sim, np.array([0, 1, 2]))
    assert ranks.tolist() == [1, 2, 1]
    summary = metrics.summarize_ranks(ranks)
    assert summary["R1"] == pytest.approx(200 / 3)
    assert summary["R5"] == 100.0
    assert summary["MdR"] == 1.0
    assert summary["MnR"] == pytest.approx(4 / 3)


def test_ties_count_against_the_target():
    sim = np.zeros((2, 4))  # every video scores the same
    assert metrics.text_to_video_ranks(sim, np.array([0, 3])).tolist() == [4, 4]
    sim = np.array([[0.5, 0.5, 0.1]])
    assert metrics.text_to_video_ranks(sim, np.array([1])).tolist() == [2]
    assert metrics.text_to_video_ranks(sim, np.array([0])).tolist() == [2]  # independent of item order


def test_nan_scores_rank_last():
    sim = np.array([[np.nan, 0.1, 0.2]])
    assert metrics.text_to_video_ranks(sim, np.array([0])).tolist() == [3]


def test_multi_caption_video_to_text_takes_the_best_caption():
    # 4 captions, 2 videos; captions 0,1,2 -> video 0, caption 3 -> video 1
    sim = np.array([[0.1, 0.9],
                    [0.2, 0.1],
                    [0.9, 0.1],
                    [0.3, 0.8]])
    text_video = np.array([0, 0, 0, 1])
    # video 0 column: [0.1, 0.2, 0.9, 0.3]; its captions rank 4, 3, 1 -> best 1
    # video 1 column: [0.9, 0.1, 0.1, 0.8]; caption 3 ranks 2
    assert metrics.video_to_text_ranks(sim, text_video).tolist() == [1, 2]
    # t2v: every caption is a query
    assert metrics.text_to_video_ranks(sim, text_video).tolist() == [2, 1, 1, 1]


def test_paragraph_protocol_is_one_query_per_video():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(5, 5))
    sim[np.arange(5), np.arange(5)] += 10
    result = metrics.retrieval_metrics(sim, np.arange(5))
    assert result["t2v"]["R1"] == 100.0 and result["v2t"]["R1"] == 100.0
    assert result["t2v"]["queries"] == 5 and result["v2t"]["queries"] == 5


def test_dual_softmax_fixes_a_hub_video():
    # video 0 is a "hub": it scores highest for every text; DSL divides its popularity away
    sim = np.array([[0.90, 0.80, 0.10],
                    [0.90, 0.20, 0.85],
                    [0.91, 0.30, 0.20]])
    text_video = np.array([1, 2, 0])
    plain = metrics.text_to_video_ranks(sim, text_video)
    dsl = metrics.text_to_video_ranks(metrics.dual_softmax(sim, 100.0, axis=0), text_video)
    assert plain.tolist() == [2, 2, 1]
    assert dsl.tolist() == [1, 1, 1]


def test_dual_softmax_prior_sums_to_one_over_the_normalised_axis():
    rng = np.random.default_rng(1)
    sim = rng.uniform(-1, 1, size=(6, 4))
    prior = metrics.dual_softmax(sim, 10.0, axis=0) / sim
    np.testing.assert_allclose(prior.sum(axis=0), 1.0, rtol=1e-6)


def test_twin_accuracy_counts_ties_half():
    sim = np.array([[0.9, 0.1], [0.5, 0.5]])
    assert metrics.twin_accuracy(sim, np.array([0, 1]), np.array([1, 0])) == 75.0
    assert np.isnan(metrics.twin_accuracy(sim, np.array([0, 1]), np.array([-1, -1])))


def test_blocks_do_not_change_ranks(monkeypatch):
    rng = np.random.default_rng(2)
    sim = rng.normal(size=(50, 30))
    targets = rng.integers(0, 30, size=50)
    expected_t2v = metrics.target_ranks(sim, targets)
    expected_v2t = metrics.video_to_text_ranks(sim, targets)
    monkeypatch.setattr(metrics, "ROW_BLOCK", 7)
    assert (metrics.target_ranks(sim, targets) == expected_t2v).all()
    assert (metrics.video_to_text_ranks(sim, targets) == expected_v2t).all()


def test_bank_dual_softmax_equals_a_hand_computed_value_and_ignores_the_other_queries():
    sim = np.array([[0.9, 0.2], [0.4, 0.8]])
    bank = np.array([[0.5, 0.1], [0.3, 0.6], [0.7, 0.2]])
    temperature = 10.0
    expected = np.empty_like(sim)
    for t in range(2):
        for v in range(2):
            expected[t, v] = sim[t, v] * np.exp(temperature * sim[t, v]) / np.exp(temperature * bank[:, v]).sum()
    np.testing.assert_allclose(metrics.bank_dual_softmax(sim, bank, temperature), expected, rtol=1e-12)
    alone = metrics.bank_dual_softmax(sim[:1], bank, temperature)
    np.testing.assert_allclose(alone, expected[:1], rtol=1e-12)  # the other query changes nothing
