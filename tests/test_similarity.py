"""The blocked evaluation engine computes exactly what the unblocked computation does, with any block size."""

import numpy as np
import pytest
import torch

from hcmi.scoring import block_sizes, level_similarity_matrices
from hcmi.model import similarity
from hcmi.model.similarity import max_mean


def reference_max_mean(text, text_mask, video, video_mask):
    """One (text, video) pair at a time, in plain loops over valid tokens: the definition, slowly."""
    out = np.zeros((len(text), len(video)))
    for i in range(len(text)):
        a = text[i][text_mask[i]]
        for j in range(len(video)):
            b = video[j][video_mask[j]]
            pair = a @ b.T
            out[i, j] = 0.5 * (pair.max(1).values.mean() + pair.max(0).values.mean())
    return torch.tensor(out, dtype=torch.float32)


def random_tokens(n, length, dim, seed, min_valid=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.nn.functional.normalize(torch.randn(n, length, dim, generator=g), dim=-1)
    valid = torch.randint(min_valid, length + 1, (n,), generator=g)
    mask = torch.arange(length)[None] < valid[:, None]
    tokens[~mask] = torch.randn(int((~mask).sum()), dim, generator=g) * 5  # padding content must not matter
    return tokens, mask


@pytest.mark.parametrize("grad", [False, True])
def test_max_mean_matches_the_definition(grad):
    text, t_mask = random_tokens(7, 9, 16, seed=0)
    video, v_mask = random_tokens(5, 6, 16, seed=1)
    with torch.set_grad_enabled(grad):
        got = max_mean(text, t_mask, video, v_mask)
    torch.testing.assert_close(got.detach(), reference_max_mean(text, t_mask, video, v_mask), rtol=1e-5, atol=1e-5)


def scattered_mask(n, length, seed):
    """Masks whose valid tokens are not a prefix (cluster slots can be empty anywhere), every count from 1 to length."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, length, generator=g) < torch.linspace(0.05, 1.0, n)[:, None]
    mask[torch.arange(n), torch.randint(0, length, (n,), generator=g)] = True  # at least one valid token each
    return mask


@pytest.mark.parametrize("video_step", [1, 3, 8])
def test_evaluation_path_packs_only_valid_tokens_and_scores_exactly_as_the_padded_path(video_step, monkeypatch):
    text, _ = random_tokens(19, 11, 16, seed=4)
    video, _ = random_tokens(23, 13, 16, seed=5)
    t_mask, v_mask = scattered_mask(19, 11, seed=6), scattered_mask(23, 13, seed=7)
    v_mask[:5] = True  # some videos full length: a run of equal counts
    shapes = []
    real_pair_tensor = similarity._pair_tensor

    def recording_pair_tensor(a, b):
        shapes.append((len(a), len(b)))
        return real_pair_tensor(a, b)

    monkeypatch.setattr(similarity, "_pair_tensor", recording_pair_tensor)
    with torch.no_grad():
        packed = similarity._max_mean_packed(text, t_mask, video, v_mask, video_step=video_step)
    with torch.enable_grad():
        padded = max_mean(text, t_mask, video, v_mask)
    torch.testing.assert_close(packed, padded.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(packed, reference_max_mean(text, t_mask, video, v_mask), rtol=1e-5, atol=1e-5)
    # the one matmul saw every valid text token once, and each video's tokens rounded up to the step (+ alignment)
    rounded = int(sum(-(-int(c) // video_step) * video_step for c in v_mask.sum(1)))
    assert shapes[0] == (int(t_mask.sum()), rounded + (-rounded % 16))


def test_evaluation_path_scores_items_in_input_order_whatever_their_lengths():
    text, t_mask = random_tokens(9, 7, 8, seed=8)
    video, v_mask = random_tokens(6, 5, 8, seed=9)
    with torch.no_grad():
        whole = max_mean(text, t_mask, video, v_mask)
        flipped = max_mean(text.flip(0), t_mask.flip(0), video.flip(0), v_mask.flip(0))
        one = max_mean(text[3:4], t_mask[3:4], video[2:3], v_mask[2:3])
    torch.testing.assert_close(flipped, whole.flip(0).flip(1))
    torch.testing.assert_close(one[0, 0], whole[3, 2])


class ThreeLevels(torch.nn.Module):
    """A stand-in model with HCMI's three levels over given representations."""

    levels = ("video_sentence", "clip_phrase", "frame_word")

    def level_similarities(self, text, video):
        from hcmi.model.hcmi import HCMI

        return HCMI.level_similarities(self, text, video)

    def similarity_bytes_per_pair(self, text, video):
        from hcmi.model.hcmi import HCMI

        return HCMI.similarity_bytes_per_pair(self, text, video)

    weights = {level: 1.0 for level in levels}


def random_reps(n_text, n_video, dim=16, seed=0):
    words, word_mask = random_tokens(n_text, 12, dim, seed)
    phrases, phrase_mask = random_tokens(n_text, 4, dim, seed + 1)
    frames, frame_mask = random_tokens(n_video, 8, dim, seed + 2)
    clips, clip_mask = random_tokens(n_video, 4, dim, seed + 3)
    sentence = torch.nn.functional.normalize(torch.randn(n_text, dim), dim=-1)
    video = torch.nn.functional.normalize(torch.randn(n_video, dim), dim=-1)
    text = {"sentence": sentence, "phrase": phrases, "phrase_mask": phrase_mask, "word": words, "word_mask": word_mask}
    vid = {"video": video, "clip": clips, "clip_mask": clip_mask, "frame": frames, "frame_mask": frame_mask}
    return text, vid


@pytest.mark.parametrize("memory_mb", [0.001, 0.01, 0.05, 1000.0])
def test_blocked_equals_unblocked_for_any_block_size(memory_mb):
    model = ThreeLevels()
    text, video = random_reps(37, 23)
    bt, bv = block_sizes(model, text, video, memory_mb)
    if memory_mb < 1:
        assert bt * bv < 37 * 23, "the budget must force several blocks"
    with torch.no_grad():
        whole = model.level_similarities(text, video)
    blocked = level_similarity_matrices(model, text, video, memory_mb)
    for level in model.levels:
        np.testing.assert_allclose(blocked[level], whole[level].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(blocked["frame_word"],
                               reference_max_mean(text["word"], text["word_mask"], video["frame"],
                                                  video["frame_mask"]).numpy(), rtol=1e-5, atol=1e-5)


def test_block_size_follows_the_memory_budget_not_the_test_set_size():
    model = ThreeLevels()
    small = block_sizes(model, *random_reps(50, 50), memory_mb=0.05)
    large = block_sizes(model, *random_reps(400, 400), memory_mb=0.05)
    per_pair = model.similarity_bytes_per_pair(*random_reps(2, 2))
    for bt, bv in (small, large):
        assert bt * bv * per_pair <= 0.05 * 2**20
    assert large[0] * large[1] >= small[0] * small[1] // 2  # the same budget, not a share of N


def test_the_pair_buffer_is_reused_exactly_across_blocks_of_different_sizes():
    model = ThreeLevels()
    text, video = random_reps(90, 200)
    bt, bv = block_sizes(model, text, video, memory_mb=0.3)
    assert 90 % bt and 200 % bv, (bt, bv)  # partial last blocks
    with torch.no_grad():
        whole = model.level_similarities(text, video)
    # several text and video blocks, the last ones partial: every block writes into the same buffer
    blocked = level_similarity_matrices(model, text, video, memory_mb=0.3)
    for level in model.levels:
        np.testing.assert_allclose(blocked[level], whole[level].numpy(), rtol=1e-6, atol=1e-6)
