"""The optimizer and learning-rate schedule shared by pretraining (hcmi/pretrain.py) and training (hcmi/trainer.py):
AdamW with CLIP's weight-decay rule, linear warm-up then cosine decay."""

from __future__ import annotations

import math

import torch


def warmup_cosine(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    return factor


def param_groups(model: torch.nn.Module, lr: float, backbone_lr_scale: float, weight_decay: float) -> list[dict]:
    """Backbone and new heads at their own learning rates; weight decay on matrices only (not on biases, norms,
    embeddings or the temperature, as CLIP does)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = (name.startswith("backbone."), param.ndim >= 2 and "embedding" not in name)
            groups.setdefault(key, []).append(param)
    return [{"params": params, "lr": lr * (backbone_lr_scale if is_backbone else 1.0),
             "weight_decay": weight_decay if decay else 0.0, "name": ("backbone" if is_backbone else "heads")
             + ("" if decay else "/no-decay")}
            for (is_backbone, decay), params in sorted(groups.items())]


def make_optimizer(groups: list[dict]) -> torch.optim.Optimizer:
    try:  # the fused kernel is several times faster (CPU and CUDA) where this torch build has it
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups)
