"""The open_clip backbone: frame embeddings (one per frame) and word-level text outputs.

Backbones are built by name from open_clip's model-config factory; the tiny CPU configuration is just another JSON
config registered from hcmi/model/configs/. Weights come from nowhere (random init, for training from scratch), an
open_clip pretrained tag (e.g. "openai", through the hub cache), or a local checkpoint file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

import torch
from torch import nn

from hcmi.errors import HcmiError

CONFIG_DIR = Path(__file__).with_name("configs")
log = logging.getLogger(__name__)
_registered = False


class BackboneError(HcmiError, RuntimeError):
    """The backbone could not be built (unknown name, weights missing offline, ...); the message says what to do."""


def _open_clip():
    import open_clip

    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
    return open_clip


@contextlib.contextmanager
def _quiet_open_clip():
    # open_clip logs a warning for every randomly initialised model; the training log already states the weights
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def model_config(name: str) -> dict:
    open_clip = _open_clip()
    config = open_clip.get_model_config(name)
    if config is None:
        raise BackboneError(f"unknown backbone '{name}': not an open_clip model config "
                            f"(see open_clip.list_models(); tiny configs live in {CONFIG_DIR})")
    return config


def input_size(name: str) -> int:
    size = model_config(name)["vision_cfg"]["image_size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)


class Backbone(nn.Module):
    def __init__(self, clip: nn.Module, name: str):
        super().__init__()
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        if not hasattr(clip, "token_embedding"):
            raise BackboneError(f"backbone '{name}': only CLIP models with a plain text transformer are supported")
        self.clip = clip
        self.name = name
        self.register_buffer("pixel_mean", torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    @property
    def image_size(self) -> int:
        size = self.clip.visual.image_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def context_length(self) -> int:
        return int(self.clip.positional_embedding.shape[0])

    @property
    def embed_dim(self) -> int:
        return int(self.clip.text_projection.shape[1])

    @property
    def logit_scale(self) -> torch.Tensor:
        """CLIP's learned temperature, exponentiated and clamped to 100 as CLIP does."""
        return self.clip.logit_scale.exp().clamp(max=100.0)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> frame embeddings [B, T, D] (projected, not normalised)."""
        b, t = frames.shape[:2]
        if frames.shape[2] != self.image_size or frames.shape[3] != self.image_size:
            raise ValueError(f"frames are {tuple(frames.shape[2:4])} px but backbone {self.name} takes "
                             f"{self.image_size} px: set frames.image_size to {self.image_size} and re-sample")
        images = frames.reshape(b * t, *frames.shape[2:]).permute(0, 3, 1, 2).float()
        images = (images - self.pixel_mean) / self.pixel_std
        return self.clip.encode_image(images).reshape(b, t, -1)

    def encode_words(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """token ids [B, L] -> (word embeddings [B, L, D], sentence embedding [B, D]: the end-of-text output)."""
        clip = self.clip
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(f"{length} tokens exceed the backbone's context of {self.context_length}")
        cast = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast) + clip.positional_embedding[:length].to(cast)
        mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
        x = clip.ln_final(clip.transformer(x, attn_mask=mask))
        words = x @ clip.text_projection
        sentence = words[torch.arange(words.shape[0], device=words.device), tokens.argmax(dim=-1)]
        return words, sentence

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.clip.set_grad_checkpointing(enabled)


# `hcmi weights` saves an open_clip tag's weights under here as a plain file, so training needs no network; relative
# to the working directory (the workflow runs in the repository root), or HCMI_WEIGHTS_DIR
WEIGHTS_DIR = Path("data/weights")
WEIGHTS_DIR_ENV = "HCMI_WEIGHTS_DIR"


# open_clip tags are plain names ("openai", "laion2b_s34b_b79k"); anything else is a file path (the workflow's
# weights rule uses the same pattern)
PRETRAINED_TAG = re.compile(r"[A-Za-z0-9_-]+")


def is_weights_tag(pretrained: str | None) -> bool:
    """True for an open_clip pretrained tag, False for None and for a local file path ("weights/b32.pt")."""
    return bool(pretrained) and PRETRAINED_TAG.fullmatch(pretrained) is not None


def weights_file(name: str, tag: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Where the weights of open_clip model `name` with pretrained tag `tag` live as a local file."""
    folder = Path(weights_dir or os.environ.get(WEIGHTS_DIR_ENV) or WEIGHTS_DIR)
    return folder / "files" / f"{name}__{tag}.pt"


def _warn_on_activation_mismatch(name: str, tag: str) -> None:
    # OpenAI's CLIP was trained with QuickGELU; open_clip's plain "ViT-B-32" config uses GELU and accepts those
    # weights anyway. The architecture must follow from the name alone (evaluation rebuilds it without the tag).
    open_clip = _open_clip()
    tag_config = open_clip.get_pretrained_cfg(name, tag)
    if not tag_config:  # not a tag open_clip knows for this model: loading it will say so
        return
    tag_quick_gelu = bool(tag_config.get("quick_gelu", False))
    config_quick_gelu = bool(model_config(name).get("quick_gelu", False))
    if tag_quick_gelu and not config_quick_gelu:
        log.warning("backbone %s: the '%s' weights were trained with QuickGELU but this config uses GELU; use the "
                    "backbone name %s-quickgelu for a faithful model", name, tag, name)
    elif config_quick_gelu and not tag_quick_gelu:
        log.warning("backbone %s: the '%s' weights were trained with GELU but this config uses QuickGELU", name, tag)


def save_pretrained_weights(name: str, tag: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Fetch open_clip model `name` with pretrained tag `tag` (network or hub cache) once and save its weights as
    a plain local file (weights_file); returns the path. Run where there is network, before training."""
    from hcmi.files import atomic_path

    open_clip = _open_clip()
    model_config(name)
    path = weights_file(name, tag, weights_dir)
    _warn_on_activation_mismatch(name, tag)
    try:
        with _quiet_open_clip():
            clip = open_clip.create_model(name, pretrained=tag)
    except Exception as exc:
        raise BackboneError(f"could not fetch pretrained weights '{tag}' for {name} through open_clip: {exc}\n"
                            f"This step needs network access (or open_clip's hub cache); known tags for {name}: "
                            f"{', '.join(open_clip.list_pretrained_tags_by_model(name)) or 'none'}") from exc
    with atomic_path(path) as tmp:
        torch.save({"state_dict": clip.state_dict(), "backbone": name, "pretrained": tag}, tmp)
    log.info("saved %s weights '%s' to %s", name, tag, path)
    return path


def describe_weights(name: str, pretrained: str | None, weights_dir: str | os.PathLike | None = None) -> dict:
    """What training will load for backbone.pretrained, fetching an open_clip tag's weights first if they are not
    local yet: the content of data/weights/backbone.json, on which training depends in both workflows."""
    from hcmi.files import sha256sum

    if not pretrained:
        return {"backbone": name, "pretrained": None, "kind": "random initialisation", "file": None, "sha256": None}
    if is_weights_tag(pretrained):
        path = weights_file(name, pretrained, weights_dir)
        if not path.exists():
            save_pretrained_weights(name, pretrained, weights_dir)
        kind = "open_clip pretrained tag"
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise BackboneError(f"backbone weights file {pretrained} not found (backbone.pretrained: an open_clip "
                                f"tag such as 'openai', or the path of a local weights file)")
        kind = "local weights file"
    return {"backbone": name, "pretrained": pretrained, "kind": kind, "file": str(path), "sha256": sha256sum(path)}


def _load_local_weights(name: str, path: Path) -> nn.Module:
    open_clip = _open_clip()
    clip = open_clip.create_model(name, pretrained=None)
    try:
        open_clip.load_checkpoint(clip, str(path))
    except Exception as exc:
        raise BackboneError(f"{path}: not usable as weights of backbone {name}: {exc}") from exc
    return clip


def _weights_from_hub(name: str, tag: str, local: Path) -> nn.Module:
    """Fallback when the local file is absent: open_clip's hub cache or the network; a clear error offline."""
    try:
        return _open_clip().create_model(name, pretrained=tag)
    except Exception as exc:
        raise BackboneError(
            f"backbone {name} with pretrained '{tag}': no local weights file {local}, and open_clip could not fetch "
            f"them ({exc}).\nTo train without network, run `hcmi weights` on a machine with network access (the "
            f"workflow's rule: `snakemake --cores 1 {local}`); it writes {local}. Or copy that file here, or set "
            f"backbone.pretrained to the path of a local weights file."
        ) from exc


def create_backbone(name: str, pretrained: str | None = None,
                    weights_dir: str | os.PathLike | None = None) -> Backbone:
    """open_clip model `name` with weights from nowhere (None: random init), a pretrained tag (the local file
    `hcmi weights` saved under weights_dir, else open_clip's hub), or a local weights file path."""
    open_clip = _open_clip()
    model_config(name)
    if is_weights_tag(pretrained):
        _warn_on_activation_mismatch(name, pretrained)
    with _quiet_open_clip():
        if not pretrained:
            clip = open_clip.create_model(name, pretrained=None)
        elif is_weights_tag(pretrained):
            local = weights_file(name, pretrained, weights_dir)
            clip = _load_local_weights(name, local) if local.exists() else _weights_from_hub(name, pretrained, local)
        elif Path(pretrained).is_file():
            clip = _load_local_weights(name, Path(pretrained))
        else:
            raise BackboneError(f"backbone weights file {pretrained} not found (backbone.pretrained: an open_clip "
                                f"tag such as 'openai', or the path of a local weights file)")
    return Backbone(clip, name)


def tokenizer(name: str, context_length: int):
    """A callable: list of texts -> LongTensor [N, context_length] (open_clip's BPE tokenizer, offline)."""
    open_clip = _open_clip()
    return open_clip.get_tokenizer(name, context_length=context_length)
