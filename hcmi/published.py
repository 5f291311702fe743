"""Published text-to-video R@1 figures the reports compare against, each with its source and the backbone it was
measured with. Nothing is filled in: a dataset/model/backbone without a published figure is absent here and shown as
missing."""

from __future__ import annotations

from dataclasses import dataclass

# short enough for a report table cell: Jiang et al., "Tencent Text-Video Retrieval", IEEE Access 2022; Luo et al.,
# "CLIP4Clip", Neurocomputing 2022 (its meanP rows, CLIP ViT-B/32)
HCMI_PAPER = "HCMI: Jiang et al., arXiv:2204.03382, abstract"
CLIP4CLIP_PAPER = "CLIP4Clip: Luo et al., arXiv:2104.08860, meanP"

# The HCMI abstract gives its best figure per dataset without naming the backbone next to it
UNSTATED_BACKBONE = "not stated (the paper's best setting)"


@dataclass(frozen=True)
class Figure:
    r1: float  # text-to-video R@1 on the dataset's standard test split
    backbone: str  # what the figure was measured with, as the source states it
    source: str


# dataset -> method (the model's head: hcmi, meanp) -> backbone key -> figure; "reported" holds a figure whose
# backbone the source does not state
T2V_R1: dict[str, dict[str, dict[str, Figure]]] = {
    "msrvtt": {"hcmi": {"reported": Figure(55.0, UNSTATED_BACKBONE, HCMI_PAPER)},
               "meanp": {"ViT-B-32": Figure(43.1, "ViT-B/32", CLIP4CLIP_PAPER)}},
    "msvd": {"hcmi": {"reported": Figure(58.2, UNSTATED_BACKBONE, HCMI_PAPER)},
             "meanp": {"ViT-B-32": Figure(46.2, "ViT-B/32", CLIP4CLIP_PAPER)}},
    "lsmdc": {"hcmi": {"reported": Figure(29.7, UNSTATED_BACKBONE, HCMI_PAPER)},
              "meanp": {"ViT-B-32": Figure(20.7, "ViT-B/32", CLIP4CLIP_PAPER)}},
    "didemo": {"hcmi": {"reported": Figure(52.1, UNSTATED_BACKBONE, HCMI_PAPER)},
               "meanp": {"ViT-B-32": Figure(43.4, "ViT-B/32", CLIP4CLIP_PAPER)}},
    "activitynet": {"hcmi": {"reported": Figure(57.3, UNSTATED_BACKBONE, HCMI_PAPER)},
                    "meanp": {"ViT-B-32": Figure(40.5, "ViT-B/32", CLIP4CLIP_PAPER)}},
}

# open_clip configs that are the same network as a published backbone (OpenAI's weights need QuickGELU)
ACTIVATION_VARIANT = "-quickgelu"


def backbone_key(name: str | None) -> str | None:
    return name.removesuffix(ACTIVATION_VARIANT) if name else name


def published(dataset: str, head: str, backbone: str | None = None) -> tuple[float, str, str] | None:
    """(R@1, backbone it was measured with, source) of the published figure for this method, or None."""
    entries = T2V_R1.get(dataset, {}).get(head, {})
    figure = entries.get(backbone_key(backbone)) or entries.get("reported")
    return (figure.r1, figure.backbone, figure.source) if figure else None
