"""Training objectives on level similarity matrices sim[text, video] whose diagonal holds the positive pairs.

Per level, a symmetric InfoNCE with CLIP's logit scale (text->video over each row, video->text over each column);
the total is the weighted sum over levels (hierarchical contrastive learning). Two refinements (DESIGN §4):

- adaptive label denoising: web captions have false negatives, so each one-hot target is softened towards the items
  that the model itself scores as near-duplicates of the positive (video-video similarity of the positive video for
  text->video; sentence-sentence for video->text): target = (1 - a) * onehot + a * softmax(sim_to_positive / tau).
  The confidence a adapts to how far the model can be trusted: max_confidence x training progress x the batch's
  top-1 retrieval accuracy. Early on, or whenever the embeddings have collapsed (everything looks like a duplicate
  of everything), a stays near 0 and cannot reinforce the collapse.
- marginal sample enhancement: negatives whose similarity lies within `margin` of the positive's (or above it) are
  the informative ones; their weight in the softmax denominator is multiplied by (1 + weight).

Both targets and weights are computed without gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def symmetric_info_nce(sim: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's loss: cross-entropy over videos for each text and over texts for each video, averaged."""
    logits = logit_scale * sim
    targets = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


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


@torch.no_grad()
def margin_log_weights(sim: torch.Tensor, margin: float, weight: float) -> torch.Tensor:
    """log of the denominator weights [N, N] for ranking each row: (1 + weight) for negatives within `margin` of
    the row's positive (the diagonal), 1 otherwise."""
    positive = sim.diagonal()[:, None]
    hard = sim > positive - margin
    hard.fill_diagonal_(False)
    return hard.float() * torch.log1p(torch.tensor(weight, device=sim.device))


def level_loss(sim: torch.Tensor, logit_scale: torch.Tensor, t2v_targets: torch.Tensor, v2t_targets: torch.Tensor,
               enhance=None) -> torch.Tensor:
    sim = sim.float()
    logits_t2v, logits_v2t = logit_scale * sim, logit_scale * sim.T
    if enhance is not None and enhance.enabled:
        logits_t2v = logits_t2v + margin_log_weights(sim.detach(), enhance.margin, enhance.weight)
        logits_v2t = logits_v2t + margin_log_weights(sim.detach().T, enhance.margin, enhance.weight)
    return 0.5 * (soft_cross_entropy(logits_t2v, t2v_targets) + soft_cross_entropy(logits_v2t, v2t_targets))


def retrieval_loss(sims: dict[str, torch.Tensor], weights: dict[str, float], logit_scale: torch.Tensor, *,
                   text: dict | None = None, video: dict | None = None, objective=None,
                   progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum of per-level losses, and each level's loss (for logging and the NaN guard).

    objective: a ModelParams-like object with `denoise` and `enhance` sections (None: plain InfoNCE).
    progress: the fraction of training done, in [0, 1] (ramps up the denoising confidence)."""
    n = next(iter(sims.values())).shape[0]
    eye = torch.eye(n, device=logit_scale.device, dtype=torch.float32)
    t2v_targets = v2t_targets = eye
    denoise = getattr(objective, "denoise", None)
    if denoise is not None and denoise.enabled and text is not None and video is not None:
        combined = sum(weights[level] * sim.detach().float() for level, sim in sims.items())
        confidence = denoise.max_confidence * min(1.0, max(0.0, progress)) * batch_accuracy(combined)
        t2v_targets = denoised_targets(video["video"], confidence, denoise.temperature)
        v2t_targets = denoised_targets(text["sentence"], confidence, denoise.temperature)
    enhance = getattr(objective, "enhance", None)
    parts = {level: level_loss(sim, logit_scale, t2v_targets, v2t_targets, enhance) for level, sim in sims.items()}
    total = sum(weights[level] * loss for level, loss in parts.items()) / sum(weights[level] for level in parts)
    return total, parts
