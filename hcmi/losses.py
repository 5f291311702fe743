"""Training objectives on level similarity matrices sim[text, video] whose diagonal holds the true pairs.

Hierarchical contrastive learning: per level a symmetric InfoNCE with CLIP's logit scale (text->video over each row,
video->text over each column), summed over the levels with their weights. Two refinements, each with the authors'
reading as default and ours kept as an alternative (docs/method.md sets them side by side):

- adaptive label denoising (`denoise.method`)
    two_view      the authors': each video is seen twice (one random frame per segment, drawn twice); another video
                  j that is more similar to view v_i than v_i's own second view v_i' is a latent positive of i.
                  Targets spread over the true and latent positives (weight `latent_weight` for a latent one).
                  "Similar" (`similarity`, ours to choose): `frames` compares the two sampled videos segment by
                  segment (mean cosine of the frame tokens of the same segments), `video` their video tokens.
    soft_targets  ours: targets softened towards intra-modal near-duplicates, trusted more as training goes on.
- marginal sample enhancement (`enhance.method`)
    triplet       the authors': each video's hardest in-batch negative text, and each text's hardest negative video,
                  form triplets; a symmetric margin loss is added with weight `weight`, on the final score or on
                  every level (`scope`). Positives (true and latent) are never taken as negatives.
    reweight      ours: negatives within `margin` of the positive get (1 + weight) times the weight in the softmax.

Targets, latent positives and weights are computed without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class LossResult:
    total: torch.Tensor
    parts: dict[str, torch.Tensor]  # per-level contrastive losses and the triplet loss, for logging and NaN checks
    stats: dict[str, float] = field(default_factory=dict)  # diagnostics (e.g. latent positives per item)
    latent: torch.Tensor | None = None  # bool [N, N]: the latent positives found (two-view denoising)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def symmetric_info_nce(sim: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's loss: cross-entropy over videos for each text and over texts for each video, averaged."""
    logits = logit_scale * sim
    targets = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


# -- two-view label denoising --------------------------------------------------------------------------------------


@torch.no_grad()
def view_similarities(first: dict, second: dict, on: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(sim(v_i, v_j) [N, N] between first views, sim(v_i, v_i') [N] of each video's two views).

    on="video": cosine of the video tokens. on="frames": the segment-aligned similarity of two sampled videos, the
    mean over the segments valid in both of the cosine of their frame tokens (an order twin, the same frames in
    another order, is then far from the video, as two draws of the same video are not)."""
    if on == "video":
        a, b = first["video"].float(), second["video"].float()
        return a @ a.T, (a * b).sum(-1)
    frames, mask = first["frame"].float(), first["frame_mask"]
    other = second["frame"].float()
    both = (mask[:, None, :] & mask[None, :, :]).float()  # [N, N, T]
    between = torch.einsum("itd,jtd->ijt", frames, frames)
    between = (between * both).sum(-1) / both.sum(-1).clamp(min=1)
    own = ((frames * other).sum(-1) * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return between, own


@torch.no_grad()
def latent_positives(between: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """bool [N, N]: (i, j), j != i, where sim(v_i, v_j) > sim(v_i, v_i')."""
    latent = between > own[:, None]
    latent.fill_diagonal_(False)
    return latent


def positive_targets(latent: torch.Tensor, latent_weight: float) -> torch.Tensor:
    """Targets [N, N]: weight 1 on the true pair, `latent_weight` on each latent positive, rows summing to 1. Row i
    serves both directions: text i's positives are video i and the videos like it; video i's are text i and the
    texts of the videos like it."""
    weights = torch.eye(len(latent), device=latent.device) + latent_weight * latent.float()
    return weights / weights.sum(-1, keepdim=True)


# -- our soft-target reading --------------------------------------------------------------------------------------


@torch.no_grad()
def denoised_targets(positives: torch.Tensor, confidence: float, temperature: float) -> torch.Tensor:
    """Soft targets [N, N]: row i puts (1 - confidence) on i and spreads `confidence` over the items by their
    similarity to item i (L2-normalised `positives` [N, D]; item i itself dominates unless near-duplicates exist)."""
    n = positives.shape[0]
    eye = torch.eye(n, device=positives.device, dtype=torch.float32)
    if confidence <= 0:
        return eye
    affinity = torch.softmax(positives.float() @ positives.float().T / temperature, dim=-1)
    return (1.0 - confidence) * eye + confidence * affinity


@torch.no_grad()
def batch_accuracy(sim: torch.Tensor) -> float:
    """Top-1 accuracy of the batch's own retrieval, text->video and video->text averaged (ties count as misses)."""
    n = sim.shape[0]
    diag = sim.diagonal()
    rows = (sim >= diag[:, None]).sum(1) == 1
    cols = (sim >= diag[None, :]).sum(0) == 1
    return float(0.5 * (rows.float().mean() + cols.float().mean())) if n else 0.0


# -- marginal sample enhancement ----------------------------------------------------------------------------------


def triplet_loss(sim: torch.Tensor, margin: float, positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric hardest-negative triplet loss on sim [N, N] (texts x videos, true pairs on the diagonal):
    mean over texts of max(0, margin - s_ii + max_j s_ij) and over videos of max(0, margin - s_ii + max_j s_ji),
    j ranging over negatives (not the diagonal, not `positives`)."""
    excluded = torch.eye(len(sim), dtype=torch.bool, device=sim.device)
    if positives is not None:
        excluded = excluded | positives
    negatives = sim.float().masked_fill(excluded, float("-inf"))
    true = sim.float().diagonal()
    hardest_video = negatives.amax(dim=1)  # for each text
    hardest_text = negatives.amax(dim=0)  # for each video
    return 0.5 * (F.relu(margin - true + hardest_video).mean() + F.relu(margin - true + hardest_text).mean())


@torch.no_grad()
def margin_log_weights(sim: torch.Tensor, margin: float, weight: float) -> torch.Tensor:
    """log of the denominator weights [N, N] for ranking each row: (1 + weight) for negatives within `margin` of
    the row's positive (the diagonal), 1 otherwise."""
    positive = sim.diagonal()[:, None]
    hard = sim > positive - margin
    hard.fill_diagonal_(False)
    return hard.float() * torch.log1p(torch.tensor(weight, device=sim.device))


# -- the objective ------------------------------------------------------------------------------------------------


def level_loss(sim: torch.Tensor, logit_scale: torch.Tensor, t2v_targets: torch.Tensor, v2t_targets: torch.Tensor,
               reweight=None) -> torch.Tensor:
    sim = sim.float()
    logits_t2v, logits_v2t = logit_scale * sim, logit_scale * sim.T
    if reweight is not None:
        logits_t2v = logits_t2v + margin_log_weights(sim.detach(), reweight.margin, reweight.weight)
        logits_v2t = logits_v2t + margin_log_weights(sim.detach().T, reweight.margin, reweight.weight)
    return 0.5 * (soft_cross_entropy(logits_t2v, t2v_targets) + soft_cross_entropy(logits_v2t, v2t_targets))


def _weighted_mean(values: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    return sum(weights[level] * value for level, value in values.items()) / sum(weights[level] for level in values)


def retrieval_loss(sims: dict[str, torch.Tensor], weights: dict[str, float], logit_scale: torch.Tensor, *,
                   objective=None, text: dict | None = None, video: dict | None = None,
                   second_view: dict | None = None, progress: float = 0.0) -> LossResult:
    """The hierarchical objective of one contrastive batch.

    objective: a ModelParams-like object with `denoise` and `enhance` sections (None: plain InfoNCE per level).
    second_view: the representation of each video's second view (two-view denoising), without gradients.
    progress: the fraction of training done, in [0, 1] (ramps up the soft-target confidence)."""
    n = next(iter(sims.values())).shape[0]
    eye = torch.eye(n, device=logit_scale.device, dtype=torch.float32)
    t2v_targets = v2t_targets = eye
    latent, stats = None, {}
    denoise = getattr(objective, "denoise", None)
    enhance = getattr(objective, "enhance", None)
    method = denoise.method if denoise is not None else "none"
    if method == "two_view":
        if second_view is None or video is None:
            raise ValueError("two-view denoising needs the representations of both views")
        latent = latent_positives(*view_similarities({k: v.detach() for k, v in video.items()}, second_view,
                                                     denoise.similarity))
        t2v_targets = v2t_targets = positive_targets(latent, denoise.latent_weight)
        stats["latent_positives"] = float(latent.sum()) / n
    elif method == "soft_targets":
        combined = sum(weights[level] * sim.detach().float() for level, sim in sims.items())
        confidence = denoise.max_confidence * min(1.0, max(0.0, progress)) * batch_accuracy(combined)
        t2v_targets = denoised_targets(video["video"], confidence, denoise.temperature)
        v2t_targets = denoised_targets(text["sentence"], confidence, denoise.temperature)
    reweight = enhance if enhance is not None and enhance.method == "reweight" else None
    parts = {level: level_loss(sim, logit_scale, t2v_targets, v2t_targets, reweight) for level, sim in sims.items()}
    total = _weighted_mean(parts, weights)
    if enhance is not None and enhance.method == "triplet":
        if enhance.scope == "final":
            triplet = triplet_loss(_weighted_mean(sims, weights), enhance.margin, latent)
        else:
            triplet = _weighted_mean({lv: triplet_loss(s, enhance.margin, latent) for lv, s in sims.items()}, weights)
        parts["triplet"] = triplet
        total = total + enhance.weight * triplet
    return LossResult(total, parts, stats, latent)
