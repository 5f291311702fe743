"""Contrastive image-text pretraining of a backbone, as CLIP is pretrained: every image against every caption of its
batch, in both directions, with CLIP's learned temperature.

The embedded benchmark's counterpart of OpenAI's CLIP weights (docs/benchmark.md): `hcmi weights` pretrains the
backbone on still images (hcmi/data/stills.py) when `backbone.pretrained` names them, and every variant and seed
fine-tunes from the result. Images of the same objects answer each other's captions, so a batch's targets spread over
every image of the caption's content (not only its own), as CLIP's would if its corpus repeated captions this often.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hcmi.logs import progress
from hcmi.model.backbone import Backbone, tokenizer
from hcmi.optim import make_optimizer, param_groups, warmup_cosine
from hcmi.parameters import PretrainParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Corpus:
    images: np.ndarray  # uint8 [N, H, W, 3] at the backbone's input size
    captions: list[str]
    contents: list[str]  # equal for images of the same objects


@dataclass(frozen=True)
class PretrainResult:
    state_dict: dict  # the open_clip model's weights (what create_backbone loads)
    log_rows: list[dict]  # step, epoch, loss, lr
    held_out: dict  # retrieval on the held-out images (hcmi.pretrain.retrieval)


def content_targets(contents: list[str]) -> torch.Tensor:
    """[B, B] rows summing to 1: a caption's target is spread over every image of its content."""
    ids = {c: i for i, c in enumerate(dict.fromkeys(contents))}
    codes = torch.tensor([ids[c] for c in contents])
    same = (codes[:, None] == codes[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def encode(backbone: Backbone, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised image and caption embeddings."""
    image = backbone.encode_frames(images[:, None])[:, 0]
    _, sentence = backbone.encode_words(tokens)
    return F.normalize(image, dim=-1), F.normalize(sentence, dim=-1)


def contrastive_loss(backbone: Backbone, image: torch.Tensor, text: torch.Tensor, contents: list[str]) -> torch.Tensor:
    logits = backbone.logit_scale * image @ text.T
    targets = content_targets(contents).to(logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


@torch.no_grad()
def retrieval(backbone: Backbone, corpus: Corpus, batch_size: int) -> dict:
    """R@1 (%) of caption -> image and image -> caption on `corpus`, a hit being any item of the same content, with
    the R@1 a random ranking would reach (chance: the mean share of same-content items)."""
    backbone.eval()
    tokens = tokenizer(backbone.name, backbone.context_length)(corpus.captions)
    images = torch.from_numpy(corpus.images)
    parts = [encode(backbone, images[i : i + batch_size], tokens[i : i + batch_size])
             for i in range(0, len(images), batch_size)]
    image = torch.cat([p[0] for p in parts])
    text = torch.cat([p[1] for p in parts])
    same = content_targets(corpus.contents) > 0
    similarity = text @ image.T
    t2i = same[torch.arange(len(same)), similarity.argmax(dim=1)].float().mean().item()
    i2t = same[torch.arange(len(same)), similarity.T.argmax(dim=1)].float().mean().item()
    return {"t2i_R1": 100 * t2i, "i2t_R1": 100 * i2t, "chance_R1": 100 * same.float().mean().item(),
            "images": len(same)}


def pretrain(backbone: Backbone, corpus: Corpus, held_out: Corpus, cfg: PretrainParams,
             seed: int) -> PretrainResult:
    """Pretrain `backbone` in place (call after seeding: its initial weights come from the caller)."""
    tokens = tokenizer(backbone.name, backbone.context_length)(corpus.captions)
    images = torch.from_numpy(corpus.images)
    per_epoch = len(images) // cfg.batch_size
    if per_epoch == 0:
        raise ValueError(f"pretraining: {len(images)} images make no batch of {cfg.batch_size}")
    total = per_epoch * cfg.epochs
    optimizer = make_optimizer(param_groups(backbone, cfg.lr, 1.0, cfg.weight_decay))
    schedule = warmup_cosine(total, max(1, int(cfg.warmup_fraction * total)))
    order = torch.Generator().manual_seed(seed)
    rows = []
    backbone.train()
    bar = progress(total=total, desc="pretrain", unit="step")
    for epoch in range(cfg.epochs):
        permutation = torch.randperm(len(images), generator=order)
        for i in range(per_epoch):
            step = epoch * per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * schedule(step)
            batch = permutation[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            image, text = encode(backbone, images[batch], tokens[batch])
            loss = contrastive_loss(backbone, image, text, [corpus.contents[j] for j in batch.tolist()])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretraining: the loss is {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            rows.append({"step": step + 1, "epoch": epoch + (i + 1) / per_epoch, "loss": loss.item(),
                         "lr": optimizer.param_groups[0]["lr"]})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    held = retrieval(backbone, held_out, cfg.batch_size)
    log.info("pretrained %d steps; held-out R@1 caption->image %.1f, image->caption %.1f (chance %.1f)",
             total, held["t2i_R1"], held["i2t_R1"], held["chance_R1"])
    state = {key: value.detach().clone() for key, value in backbone.clip.state_dict().items()}
    return PretrainResult(state, rows, held)
