"""Model code: the open_clip backbone, the HCMI heads and the CLIP4Clip-meanP baseline. Knows nothing of files."""

from hcmi.model.backbone import Backbone, create_backbone
from hcmi.model.retrieval import RetrievalModel, build_model

__all__ = ["Backbone", "create_backbone", "RetrievalModel", "build_model"]
