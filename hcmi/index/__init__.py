"""A searchable index of encoded videos: an append-only memory-mapped store of representations (store), a FAISS
index over one vector per video (coarse), and two-stage search that re-ranks the coarse candidates with a model's
full multi-level score (search). Imports no model: the scorer is passed in."""

from hcmi.index.coarse import EXACT_MAX_VIDEOS, CoarseIndex, choose_kind
from hcmi.index.errors import IndexCorrupt, IndexMismatch, IndexMissing, VideoIndexError
from hcmi.index.search import exhaustive_search, recall_at_k, search
from hcmi.index.store import VideoStore

__all__ = ["CoarseIndex", "EXACT_MAX_VIDEOS", "IndexCorrupt", "IndexMismatch", "IndexMissing", "VideoIndexError",
           "VideoStore", "choose_kind", "exhaustive_search", "recall_at_k", "search"]
