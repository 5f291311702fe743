"""Published text-to-video R@1 figures the reports compare against, each with its source. Nothing is filled in:
a dataset/model/backbone without a published figure is absent here and shown as missing."""

from __future__ import annotations

HCMI_PAPER = "Jiang et al., Tencent Text-Video Retrieval (HCMI), IEEE Access 2022, arXiv:2204.03382"
CLIP4CLIP_PAPER = "Luo et al., CLIP4Clip, Neurocomputing 2022, arXiv:2104.08860 (meanP rows, ViT-B/32)"

# dataset -> model -> backbone -> (t2v R@1, source)
T2V_R1: dict[str, dict[str, dict[str, tuple[float, str]]]] = {
    "msrvtt": {"hcmi": {"reported": (55.0, HCMI_PAPER)}, "baseline": {"ViT-B-32": (43.1, CLIP4CLIP_PAPER)}},
    "msvd": {"hcmi": {"reported": (58.2, HCMI_PAPER)}, "baseline": {"ViT-B-32": (46.2, CLIP4CLIP_PAPER)}},
    "lsmdc": {"hcmi": {"reported": (29.7, HCMI_PAPER)}, "baseline": {"ViT-B-32": (20.7, CLIP4CLIP_PAPER)}},
    "didemo": {"hcmi": {"reported": (52.1, HCMI_PAPER)}, "baseline": {"ViT-B-32": (43.4, CLIP4CLIP_PAPER)}},
    "activitynet": {"hcmi": {"reported": (57.3, HCMI_PAPER)}, "baseline": {"ViT-B-32": (40.5, CLIP4CLIP_PAPER)}},
}


def published(dataset: str, model: str, backbone: str | None = None) -> tuple[float, str, str] | None:
    """(R@1, backbone label, source) of the published figure for this model family, or None."""
    entries = T2V_R1.get(dataset, {}).get(model, {})
    if backbone in entries:
        value, source = entries[backbone]
        return value, backbone, source
    if "reported" in entries:
        value, source = entries["reported"]
        return value, "as reported", source
    return None
