"""Model code: the open_clip backbone, the HCMI heads and the CLIP4Clip-meanP baseline. Builds models only: it
reads no files and knows nothing of params files, weights on disk or the workflow (hcmi/weights.py obtains weights)."""

from hcmi.model.backbone import Backbone, create_backbone
from hcmi.model.factory import build_model
from hcmi.model.retrieval import RetrievalModel

__all__ = ["Backbone", "create_backbone", "RetrievalModel", "build_model"]
