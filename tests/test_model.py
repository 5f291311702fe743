import pytest
import torch

from hcmi.config import from_dict, model_params
from hcmi.losses import denoised_targets, margin_log_weights, retrieval_loss, symmetric_info_nce
from hcmi.model import build_model, create_backbone
from hcmi.model.backbone import tokenizer
from hcmi.model.hierarchy import AdaptiveClustering, METHODS, uniform_assignment
from hcmi.model.similarity import cosine, max_mean

from conftest import tiny_params_dict

TEXTS = ["a red circle moves left, then a blue square grows",
         "first a green triangle sinks, and then the white box goes right",
         "a purple disk shrinks before a yellow rhombus rises",
         "the blue diamond expands after a red square moves up"]


def make(variant: str, seed: int = 0):
    params = from_dict(tiny_params_dict())
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


@pytest.mark.parametrize("method", METHODS)
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


def test_losses_are_finite_and_drop_when_overfitting_a_batch():
    model, tok = make("hcmi")
    params = from_dict(tiny_params_dict()).variant("hcmi")
    frames, mask = batch()
    tokens = tok(TEXTS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        video, text = model.encode_video(frames, mask), model.encode_text(tokens)
        loss, parts = retrieval_loss(model.level_similarities(text, video), model.level_weights(), model.logit_scale,
                                     text=text, video=video, objective=params, progress=step / 25)
        assert torch.isfinite(loss) and all(torch.isfinite(p) for p in parts.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_gradients_reach_the_backbone_and_every_head():
    model, tok = make("hcmi")
    params = from_dict(tiny_params_dict()).variant("hcmi")
    frames, mask = batch()
    video, text = model.encode_video(frames, mask), model.encode_text(tok(TEXTS))
    loss, _ = retrieval_loss(model.level_similarities(text, video), model.level_weights(), model.logit_scale,
                             text=text, video=video, objective=params, progress=0.5)
    loss.backward()
    for name in ("backbone.clip.visual.conv1.weight", "backbone.clip.token_embedding.weight",
                 "backbone.clip.logit_scale", "temporal.positions", "clip_clustering.score.weight",
                 "phrase_clustering.score.weight", "video_pool.score.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


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
    # with enhancement off, the loss is CLIP's symmetric InfoNCE
    plain = model_params({**tiny_params_dict()["model"], "denoise": {"enabled": False, "max_confidence": 0,
                                                                     "temperature": 1},
                          "enhance": {"enabled": False, "margin": 0, "weight": 0}})
    scale = torch.tensor(10.0)
    loss, _ = retrieval_loss({"video_sentence": sim}, {"video_sentence": 1.0}, scale, objective=plain)
    torch.testing.assert_close(loss, symmetric_info_nce(sim, scale))


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
