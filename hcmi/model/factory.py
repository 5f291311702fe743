"""Build a model variant by its `head` (params `model.head`): the one place that knows every head."""

from __future__ import annotations

from hcmi.model.backbone import Backbone
from hcmi.model.baseline import MeanPooling
from hcmi.model.hcmi import HCMI
from hcmi.model.retrieval import RetrievalModel

HEADS = ("meanp", "hcmi")


def build_model(params, backbone: Backbone) -> RetrievalModel:
    """params: a ModelParams (the merged `model` + `variants.<name>` section)."""
    if params.head == "meanp":
        return MeanPooling(backbone)
    if params.head == "hcmi":
        return HCMI(backbone, params)
    raise ValueError(f"unknown model head '{params.head}' (known: {', '.join(HEADS)})")
