"""Model code: the open_clip backbone, the HCMI heads and the CLIP4Clip-meanP baseline. Builds models only: it
reads no files and knows nothing of params files, weights on disk or the workflow (hcmi/weights.py obtains weights)."""

from hcmi.model.backbone import Backbone, create_backbone
from hcmi.model.retrieval import RetrievalModel

# build_model is in hcmi.model.factory, imported only where models are built: the heads are the code of those steps
# alone (a step that only needs the backbone, such as `hcmi weights`, does not re-run when a head changes)
__all__ = ["Backbone", "create_backbone", "RetrievalModel"]
