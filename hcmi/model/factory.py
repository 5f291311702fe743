"""Build a model variant by its `head` (params `model.head`): the one place that knows every head."""

from __future__ import annotations

import importlib

from hcmi.model.backbone import Backbone
from hcmi.model.retrieval import RetrievalModel

# head -> "module:class" that implements it, imported only when that head is built: the code of a step that builds
# a model is its own import closure plus the module of that model's head (hcmi/codebase.py reads this table), so an
# edit of one head re-runs only the variants that use it
HEADS = {"meanp": "hcmi.model.baseline:MeanPooling", "hcmi": "hcmi.model.hcmi:HCMI"}


def build_model(params, backbone: Backbone) -> RetrievalModel:
    """params: a ModelParams (the merged `model` + `variants.<name>` section)."""
    if params.head not in HEADS:
        raise ValueError(f"unknown model head '{params.head}' (known: {', '.join(HEADS)})")
    module, name = HEADS[params.head].split(":")
    head = getattr(importlib.import_module(module), name)
    return head(backbone, params)
