"""The blocked evaluation engine computes exactly what the unblocked computation does, with any block size."""

import numpy as np
import pytest
import torch

from hcmi.evaluate import block_sizes, level_similarity_matrices
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


def test_video_blocks_are_aligned_and_the_pair_buffer_is_reused_exactly():
    model = ThreeLevels()
    text, video = random_reps(90, 200)
    bt, bv = block_sizes(model, text, video, memory_mb=0.3)
    assert bv < 200 and bv % 16 == 0, (bt, bv)
    with torch.no_grad():
        whole = model.level_similarities(text, video)
    # several text and video blocks, the last ones partial: every block writes into the same buffer
    blocked = level_similarity_matrices(model, text, video, memory_mb=0.3)
    for level in model.levels:
        np.testing.assert_allclose(blocked[level], whole[level].numpy(), rtol=1e-6, atol=1e-6)
