"""hcmi: a reproducibility pipeline for HCMI text-video retrieval (Jiang et al., 2022)."""

__version__ = "0.1.0"
