import pytest
import torch

from hcmi.config import model_params
from hcmi.losses import (denoised_targets, latent_positives, margin_log_weights, positive_targets, retrieval_loss,
                         soft_cross_entropy, symmetric_info_nce, triplet_loss, view_similarities)
from hcmi.model import create_backbone
from hcmi.model.factory import build_model
from hcmi.model.aggregation import CLUSTERING, AdaptiveClustering, AttentionAggregation, uniform_assignment
from hcmi.model.backbone import tokenizer
from hcmi.model.similarity import cosine, max_mean

from conftest import tiny_params_dict, tiny_params_from

TEXTS = ["a red circle moves left, then a blue square grows",
         "first a green triangle sinks, and then the white box goes right",
         "a purple disk shrinks before a yellow rhombus rises",
         "the blue diamond expands after a red square moves up"]


def make(variant: str, seed: int = 0, **model_overrides):
    raw = tiny_params_dict()
    raw["variants"][variant] = {**raw["variants"][variant], **model_overrides}
    params = tiny_params_from(raw)
    torch.manual_seed(seed)
    model = build_model(params.variant(variant), create_backbone(params.backbone.name))
    return model, tokenizer(params.backbone.name, 32)


def batch(n=4, t=6, valid=(6, 4, 5, 2), size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (n, t, size, size, 3), dtype=torch.uint8, generator=g)
    mask = torch.zeros(n, t, dtype=torch.bool)
    for i, v in enumerate(valid[:n]):
        mask[i, :v] = True
    return frames, mask


@pytest.mark.parametrize("variant", ["baseline", "hcmi"])
def test_shapes_and_levels(variant):
    model, tok = make(variant)
    frames, mask = batch()
    video, text = model.encode_video(frames, mask), model.encode_text(tok(TEXTS[:3]))
    sims = model.level_similarities(text, video)
    assert set(sims) == set(model.levels)
    for sim in sims.values():
        assert sim.shape == (3, 4) and torch.isfinite(sim).all()
    assert model.similarity(text, video).shape == (3, 4)
    if variant == "hcmi":
        assert model.levels == ("video_sentence", "clip_phrase", "frame_word")
        assert video["clip"].shape[:2] == (4, 4) and text["phrase"].shape[:2] == (3, 4)


@pytest.mark.parametrize("variant", ["baseline", "hcmi"])
def test_padding_frames_never_change_a_score(variant):
    model, tok = make(variant)
    model.eval()
    frames, mask = batch()
    other = frames.clone()
    other[~mask] = torch.randint(0, 256, other[~mask].shape, dtype=torch.uint8)
    text = model.encode_text(tok(TEXTS))
    with torch.no_grad():
        a = model.similarity(text, model.encode_video(frames, mask))
        b = model.similarity(text, model.encode_video(other, mask))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["baseline", "hcmi"])
def test_padding_words_never_change_a_score(variant):
    model, _ = make(variant)
    model.eval()
    short, long_ = tokenizer("hcmi-tiny", 20)(TEXTS), tokenizer("hcmi-tiny", 32)(TEXTS)
    frames, mask = batch()
    with torch.no_grad():
        video = model.encode_video(frames, mask)
        a = model.similarity(model.encode_text(short), video)
        b = model.similarity(model.encode_text(long_), video)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", CLUSTERING)
def test_clustering_assigns_every_valid_token_and_no_padding(method):
    torch.manual_seed(0)
    clustering = AdaptiveClustering(16, clusters=4, method=method)
    x = torch.randn(3, 10, 16)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[0, :10], mask[1, :5], mask[2, :2] = True, True, True
    tokens, cluster_mask, assign = clustering(x, mask)
    assert tokens.shape == (3, 4, 16)
    assert (assign[mask] >= 0).all() and (assign[~mask] == -1).all()
    for b in range(3):
        used = set(assign[b][mask[b]].tolist())
        assert used == set(torch.nonzero(cluster_mask[b]).flatten().tolist())
    assert cluster_mask[2].sum() <= 2, "two valid tokens make at most two clusters"
    # padding content is irrelevant
    y = x.clone()
    y[~mask] = torch.randn_like(y[~mask]) * 10
    torch.testing.assert_close(clustering(y, mask)[0], tokens)


def test_density_peaks_find_planted_groups():
    centres = torch.eye(3, 8) * 5
    x = torch.cat([centres[i].repeat(4, 1) + 0.01 * torch.randn(4, 8) for i in range(3)])[None]
    mask = torch.ones(1, 12, dtype=torch.bool)
    assign = AdaptiveClustering(8, clusters=3, method="density_peak").assignment(x, mask)[0]
    groups = [set(assign[i * 4:(i + 1) * 4].tolist()) for i in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3


def test_uniform_assignment_is_contiguous():
    mask = torch.tensor([[True] * 8, [True] * 3 + [False] * 5])
    assert uniform_assignment(mask, 4).tolist() == [[0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 2, -1, -1, -1, -1, -1]]


def test_identical_inputs_score_maximally_at_every_level():
    torch.manual_seed(0)
    tokens = torch.nn.functional.normalize(torch.randn(5, 6, 16), dim=-1)
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[1, 3:] = False
    sim = max_mean(tokens, mask, tokens, mask)
    torch.testing.assert_close(sim.diagonal(), torch.ones(5))
    assert (sim <= sim.diagonal()[:, None] + 1e-6).all()
    single = tokens[:, 0]
    torch.testing.assert_close(cosine(single, single).diagonal(), torch.ones(5))
    model, tok = make("hcmi")
    model.eval()
    frames, fmask = batch()
    with torch.no_grad():
        video = model.encode_video(frames, fmask)
        for level in ("clip", "frame"):
            key_mask = video[f"{level}_mask"]
            self_sim = max_mean(video[level], key_mask, video[level], key_mask)
            assert torch.allclose(self_sim.diagonal(), torch.ones(4), atol=1e-5)
            assert (self_sim <= self_sim.diagonal()[:, None] + 1e-5).all()


def second_view(frames):
    """Another draw of the same videos: the same frames with a little pixel noise (as a neighbouring frame)."""
    noise = torch.randint(-3, 4, frames.shape, generator=torch.Generator().manual_seed(1))
    return (frames.int() + noise).clamp(0, 255).to(torch.uint8)


def objective_loss(model, objective, frames, mask, tokens, progress=0.5):
    video, text = model.encode_video(frames, mask), model.encode_text(tokens)
    with torch.no_grad():
        second = model.encode_video(second_view(frames), mask) if objective.two_views else None
    return retrieval_loss(model.level_similarities(text, video), model.level_weights(), model.logit_scale,
                          text=text, video=video, second_view=second, objective=objective, progress=progress)


@pytest.mark.parametrize("aggregation", ["attention", "density_peak"])
def test_losses_are_finite_and_drop_when_overfitting_a_batch(aggregation):
    model, tok = make("hcmi", aggregation=aggregation)
    objective = tiny_params_from(tiny_params_dict()).variant("hcmi")
    frames, mask = batch()
    tokens = tok(TEXTS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        result = objective_loss(model, objective, frames, mask, tokens, step / 40)
        assert torch.isfinite(result.total) and all(torch.isfinite(p) for p in result.parts.values())
        optimizer.zero_grad()
        result.total.backward()
        optimizer.step()
        losses.append(result.total.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("aggregation, heads", [
    ("attention", ("clip_aggregation.queries", "clip_aggregation.mix.in_proj_weight",
                   "clip_aggregation.feed_forward.0.weight", "video_token.layer.queries",
                   "phrase_aggregation.key_proj.weight", "sentence_token.layer.feed_forward.2.weight")),
    ("density_peak", ("clip_aggregation.score.weight", "phrase_aggregation.score.weight",
                      "video_token.layer.score.weight", "sentence_token.layer.score.weight")),
])
def test_gradients_reach_every_parameter(aggregation, heads):
    model, tok = make("hcmi", aggregation=aggregation)
    objective = tiny_params_from(tiny_params_dict()).variant("hcmi")
    frames, mask = batch()
    objective_loss(model, objective, frames, mask, tok(TEXTS)).total.backward()
    named = dict(model.named_parameters())
    for name in ("backbone.clip.visual.conv1.weight", "backbone.clip.token_embedding.weight",
                 "backbone.clip.logit_scale", "temporal.positions") + heads:
        grad = named[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    unused = [name for name, p in named.items() if p.grad is None and not name.startswith("backbone.")]
    assert not unused, f"head parameters without gradient (DDP would fail): {unused}"


def test_attention_aggregation_gives_k_tokens_and_ignores_padding():
    torch.manual_seed(0)
    layer = AttentionAggregation(16, outputs=3).eval()
    x = torch.randn(2, 7, 16)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    tokens, out_mask, assignment = layer(x, mask)
    assert tokens.shape == (2, 3, 16) and out_mask.all()
    assert (assignment[~mask] == -1).all() and ((assignment[mask] >= 0) & (assignment[mask] < 3)).all()
    noisy = x.clone()
    noisy[~mask] = torch.randn_like(noisy[~mask]) * 100  # padding content
    longer = torch.cat([x, torch.randn(2, 5, 16)], dim=1)  # padded length
    longer_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(layer(noisy, mask)[0], tokens, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer(longer, longer_mask)[0], tokens, rtol=1e-5, atol=1e-5)


def frames_rep(frames):
    frames = torch.nn.functional.normalize(frames, dim=-1)
    return {"frame": frames, "frame_mask": torch.ones(frames.shape[:2], dtype=torch.bool),
            "video": torch.nn.functional.normalize(frames.mean(1), dim=-1)}


@pytest.mark.parametrize("similarity", ["frames", "video"])
def test_latent_positives_mark_a_copy_and_not_a_different_video(similarity):
    torch.manual_seed(0)
    base = torch.randn(4, 6, 8)
    video = base.clone()
    video[1] = base[0]  # video 1 shows what video 0 shows
    other_view = video + 0.3 * torch.randn(4, 6, 8)  # a noisier second draw of each video
    latent = latent_positives(*view_similarities(frames_rep(video), frames_rep(other_view), similarity))
    assert latent[0, 1] and latent[1, 0], "a copy is closer than the video's own second view"
    assert not latent[0, 2] and not latent[0, 3] and not latent.diagonal().any()


def test_segment_aligned_similarity_tells_an_order_twin_from_a_copy():
    torch.manual_seed(0)
    base = torch.randn(3, 6, 8)
    video = base.clone()
    video[1] = base[0].flip(0)  # video 1: video 0's frames in reverse order
    other_view = video + 0.3 * torch.randn(3, 6, 8)
    by_frames = latent_positives(*view_similarities(frames_rep(video), frames_rep(other_view), "frames"))
    by_video = latent_positives(*view_similarities(frames_rep(video), frames_rep(other_view), "video"))
    assert by_video[0, 1], "the video tokens of an order twin are alike: taken for a latent positive"
    assert not by_frames[0, 1], "segment by segment, an order twin is another video"


def test_loss_with_a_latent_positive_equals_a_hand_computed_value():
    sim = torch.tensor([[0.9, 0.8, 0.1], [0.7, 0.95, 0.2], [0.0, 0.1, 0.6]])
    latent = torch.tensor([[False, True, False], [False, False, False], [False, False, False]])
    targets = positive_targets(latent, latent_weight=1.0)
    torch.testing.assert_close(targets[0], torch.tensor([0.5, 0.5, 0.0]))
    scale = torch.tensor(10.0)
    by_hand_row0 = -0.5 * (torch.log_softmax(10 * sim[0], -1)[0] + torch.log_softmax(10 * sim[0], -1)[1])
    t2v = soft_cross_entropy(10 * sim, targets)
    expected_t2v = (by_hand_row0 - torch.log_softmax(10 * sim[1], -1)[1] - torch.log_softmax(10 * sim[2], -1)[2]) / 3
    torch.testing.assert_close(t2v, expected_t2v)
    objective = model_params({**tiny_params_dict()["model"], "enhance": {"method": "none", "margin": 0, "weight": 0,
                                                                          "scope": "final"}})
    first = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0]])[:, None, :]  # one segment each: frames = video tokens
    second = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])[:, None, :]
    video, second = frames_rep(first), frames_rep(second)
    result = retrieval_loss({"video_sentence": sim}, {"video_sentence": 1.0}, scale, objective=objective, video=video,
                            second_view=second)
    found = latent_positives(*view_similarities(video, second, "frames"))
    assert found[0, 1] and found[1, 0] and found.sum() == 2 and result.stats["latent_positives"] == pytest.approx(2 / 3)
    targets = positive_targets(found, 1.0)
    expected = 0.5 * (soft_cross_entropy(10 * sim, targets) + soft_cross_entropy(10 * sim.T, targets))
    torch.testing.assert_close(result.total, expected)


def test_triplet_enhancement_equals_a_hand_computed_value_and_vanishes_beyond_the_margin():
    sim = torch.tensor([[0.9, 0.5, 0.2], [0.85, 0.6, 0.1], [0.0, 0.3, 0.7]])
    # texts: hardest negative video of text0 0.5, text1 0.85, text2 0.3; videos: hardest negative text of video0
    # 0.85, video1 0.5, video2 0.2
    texts = [max(0, 0.2 - 0.9 + 0.5), max(0, 0.2 - 0.6 + 0.85), max(0, 0.2 - 0.7 + 0.3)]
    videos = [max(0, 0.2 - 0.9 + 0.85), max(0, 0.2 - 0.6 + 0.5), max(0, 0.2 - 0.7 + 0.2)]
    expected = 0.5 * (sum(texts) / 3 + sum(videos) / 3)
    torch.testing.assert_close(triplet_loss(sim, 0.2), torch.tensor(expected))
    far = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.8, 0.1], [0.2, 0.0, 0.9]])
    assert triplet_loss(far, 0.2).item() == 0.0
    positives = torch.tensor([[False, False, False], [True, False, False], [False, False, False]])
    assert triplet_loss(sim, 0.2, positives) < triplet_loss(sim, 0.2), "a latent positive is no negative"


def test_denoising_moves_target_mass_only_to_near_duplicates():
    x = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.999, 0.045], [0.0, 1.0]]), dim=-1)
    targets = denoised_targets(x, confidence=0.2, temperature=0.05)
    torch.testing.assert_close(targets.sum(-1), torch.ones(3))
    assert targets[0, 1] > 0.05 and targets[0, 2] < 1e-6  # near-duplicate gets mass, the dissimilar item none
    assert torch.equal(denoised_targets(x, 0.0, 0.05), torch.eye(3))


def test_marginal_negatives_get_extra_weight():
    sim = torch.tensor([[0.8, 0.75, 0.1], [0.2, 0.5, 0.9], [0.0, 0.0, 0.3]])
    weights = margin_log_weights(sim, margin=0.1, weight=1.0).exp()
    assert weights.tolist() == [[1.0, 2.0, 1.0], [1.0, 1.0, 2.0], [1.0, 1.0, 1.0]]
    # with both refinements off, the loss is CLIP's symmetric InfoNCE
    plain = model_params({**tiny_params_dict()["model"],
                          "denoise": {"method": "none", "similarity": "frames", "latent_weight": 1,
                                      "max_confidence": 0, "temperature": 1},
                          "enhance": {"method": "none", "margin": 0, "weight": 0, "scope": "final"}})
    scale = torch.tensor(10.0)
    result = retrieval_loss({"video_sentence": sim}, {"video_sentence": 1.0}, scale, objective=plain)
    torch.testing.assert_close(result.total, symmetric_info_nce(sim, scale))


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model, tok = make("hcmi", seed=3)
        model.backbone.set_grad_checkpointing(checkpointing)
        frames, mask = batch()
        video, text = model(frames, mask, tok(TEXTS))
        loss = model.similarity(text, video).diagonal().sum()
        loss.backward()
        grads.append(model.backbone.clip.visual.conv1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
