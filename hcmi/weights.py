"""Obtaining and checking backbone weights (the model package itself reads no files).

`backbone.pretrained` is None (random initialisation: training from scratch), an open_clip pretrained tag such as
"openai", the tag "synthetic-stills" (the embedded benchmark's pretraining on still images: `hcmi weights` makes it,
hcmi/pretrain.py), or the path of a local weights file. A tag is fetched (or pretrained) once by `hcmi weights`, and
saved as a plain state dict under data/weights/files/; training then loads only local files, and
data/weights/backbone.json records each file's sha256. Every file is loaded with `weights_only=True`: a weights file
that would need arbitrary unpickling is refused, since weights travel through shared DVC remotes.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import torch

from hcmi.config import STILLS_TAG
from hcmi.errors import HcmiError
from hcmi.files import sha256sum, write_bytes
from hcmi.model.backbone import model_config, open_clip_module, quiet_open_clip

log = logging.getLogger(__name__)

# open_clip tags are plain names ("openai", "laion2b_s34b_b79k"); anything else is a file path
PRETRAINED_TAG = re.compile(r"[A-Za-z0-9_-]+")
# the embedded benchmark's own pretraining (params `pretrain`) is named like an open_clip tag: STILLS_TAG


class WeightsError(HcmiError, RuntimeError):
    """Weights could not be fetched, found or read; the message says what to do."""


def is_weights_tag(pretrained: str | None) -> bool:
    """True for an open_clip pretrained tag, False for None and for a local file path ("weights/b32.pt")."""
    return bool(pretrained) and PRETRAINED_TAG.fullmatch(pretrained) is not None


def weights_file(name: str, tag: str, weights_dir: Path) -> Path:
    """Where the weights of open_clip model `name` with pretrained tag `tag` live as a local file."""
    return Path(weights_dir) / "files" / f"{name}__{tag}.pt"


def _warn_on_activation_mismatch(name: str, tag: str) -> None:
    # OpenAI's CLIP was trained with QuickGELU; open_clip's plain "ViT-B-32" config uses GELU and accepts those
    # weights anyway. The architecture must follow from the name alone (evaluation rebuilds it without the tag).
    tag_config = open_clip_module().get_pretrained_cfg(name, tag)
    if not tag_config:  # not a tag open_clip knows for this model: fetching it will say so
        return
    tag_quick_gelu = bool(tag_config.get("quick_gelu", False))
    config_quick_gelu = bool(model_config(name).get("quick_gelu", False))
    if tag_quick_gelu and not config_quick_gelu:
        log.warning("backbone %s: the '%s' weights were trained with QuickGELU but this config uses GELU; use the "
                    "backbone name %s-quickgelu for a faithful model", name, tag, name)
    elif config_quick_gelu and not tag_quick_gelu:
        log.warning("backbone %s: the '%s' weights were trained with GELU but this config uses QuickGELU", name, tag)


def save_state_dict(path: Path, state_dict: dict) -> None:
    """Write a state dict atomically, the same weights as the same bytes (torch.save names its archive after the file
    it writes to: saving through memory keeps the temporary file's name out of it, so sha256 identifies weights)."""
    buffer = io.BytesIO()
    torch.save({key: value.detach().cpu() for key, value in state_dict.items()}, buffer)
    write_bytes(path, buffer.getvalue())


def fetch_pretrained(name: str, tag: str, weights_dir: Path) -> Path:
    """Fetch open_clip model `name` with pretrained tag `tag` (network or open_clip's hub cache) once and save its
    weights as a plain local state dict; returns the path. Run where there is network, before training."""
    open_clip = open_clip_module()
    model_config(name)
    path = weights_file(name, tag, weights_dir)
    _warn_on_activation_mismatch(name, tag)
    try:
        with quiet_open_clip():
            clip = open_clip.create_model(name, pretrained=tag)
    except Exception as exc:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise WeightsError(f"could not fetch pretrained weights '{tag}' for {name} through open_clip: {exc}\n"
                           f"This step needs network access (or open_clip's hub cache); known tags for {name}: "
                           f"{known}") from exc
    save_state_dict(path, clip.state_dict())
    log.info("saved %s weights '%s' to %s", name, tag, path)
    return path


def local_weights(name: str, pretrained: str | None, weights_dir: Path) -> Path | None:
    """The local file training loads for backbone.pretrained (None: random initialisation)."""
    if not pretrained:
        return None
    if is_weights_tag(pretrained):
        path = weights_file(name, pretrained, weights_dir)
        if not path.exists() and pretrained == STILLS_TAG:
            raise WeightsError(f"backbone {name} with pretrained '{STILLS_TAG}': no local weights file {path}.\nRun "
                               f"`hcmi weights` (the workflow's `weights` step), which pretrains it on the embedded "
                               f"benchmark's still images (params `pretrain`).")
        if not path.exists():
            raise WeightsError(
                f"backbone {name} with pretrained '{pretrained}': no local weights file {path}.\nRun `hcmi weights` "
                f"on a machine with network access (the workflow's `weights` step does), or copy that file here, "
                f"or set backbone.pretrained to the path of a local weights file.")
        return path
    path = Path(pretrained)
    if not path.is_file():
        raise WeightsError(f"backbone weights file {pretrained} not found (backbone.pretrained: an open_clip tag "
                           f"such as 'openai', or the path of a local weights file)")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A weights file as a state dict, loaded without arbitrary unpickling."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a plain weights file that loads without running code ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); save the model's state_dict() with "
                           f"torch.save, or let `hcmi weights` fetch an open_clip tag") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path}: expected a state dict (parameter name -> tensor)")
    return data


def obtain(name: str, pretrained: str | None, weights_dir: Path) -> dict:
    """Make backbone.pretrained local (fetching an open_clip tag once) and describe it: one entry of
    data/weights/backbone.json, on which training depends in both workflows."""
    if not pretrained:
        return {"backbone": name, "pretrained": None, "kind": "random initialisation", "file": None, "sha256": None}
    if (is_weights_tag(pretrained) and pretrained != STILLS_TAG
            and not weights_file(name, pretrained, weights_dir).exists()):
        fetch_pretrained(name, pretrained, weights_dir)
    path = local_weights(name, pretrained, weights_dir)
    kind = ("pretrained on the embedded benchmark's still images" if pretrained == STILLS_TAG
            else "open_clip pretrained tag" if is_weights_tag(pretrained) else "local weights file")
    return {"backbone": name, "pretrained": pretrained, "kind": kind, "file": str(path), "sha256": sha256sum(path)}


def load_backbone_weights(name: str, pretrained: str | None, weights_dir: Path) -> dict | None:
    """The state dict to build backbone `name` with (None: random initialisation)."""
    path = local_weights(name, pretrained, weights_dir)
    return read_state_dict(path) if path is not None else None
