"""The open_clip backbone: frame embeddings (one per frame) and word-level text outputs.

Backbones are built by name from open_clip's model-config factory; the tiny CPU configuration is just another JSON
config registered from hcmi/model/configs/. A backbone is built randomly initialised or from a state dict that the
caller obtained (hcmi/weights.py): the model reads no files.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from torch import nn

from hcmi.errors import HcmiError

CONFIG_DIR = Path(__file__).with_name("configs")
log = logging.getLogger(__name__)
_registered = False


class BackboneError(HcmiError, RuntimeError):
    """The backbone could not be built (unknown name, weights missing offline, ...); the message says what to do."""


def open_clip_module():
    import open_clip

    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
    return open_clip


@contextlib.contextmanager
def quiet_open_clip():
    # open_clip logs a warning for every randomly initialised model; the training log already states the weights
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def model_config(name: str) -> dict:
    open_clip = open_clip_module()
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


def create_backbone(name: str, state_dict: dict | None = None) -> Backbone:
    """open_clip model `name`, randomly initialised, or with `state_dict` loaded (strictly: every weight must fit)."""
    open_clip = open_clip_module()
    model_config(name)
    with quiet_open_clip():
        clip = open_clip.create_model(name, pretrained=None)
    if state_dict is not None:
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
        try:
            clip.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise BackboneError(f"the weights do not fit backbone {name}: {str(exc).splitlines()[0]}") from None
    return Backbone(clip, name)


def token_count(name: str, text: str) -> int:
    """Tokens of `text` under backbone `name`'s tokenizer, with its start and end tokens, before any truncation."""
    return len(open_clip_module().get_tokenizer(name).encode(text)) + 2


def tokenizer(name: str, context_length: int):
    """A callable: list of texts -> LongTensor [N, context_length] (open_clip's BPE tokenizer, offline)."""
    open_clip = open_clip_module()
    return open_clip.get_tokenizer(name, context_length=context_length)
