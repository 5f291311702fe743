"""Published text-to-video R@1 figures the reports compare against, each with its source, the backbone it was
measured with, and its inference protocol: "DSL" (dual-softmax re-scoring over the test queries) or "plain".
A report sets a figure beside our result of the same protocol. Nothing is filled in: a dataset, method or backbone
without a published figure is absent here and shown as missing; a figure this project could not check against its
source is marked unverified."""

from __future__ import annotations

from dataclasses import dataclass

DSL, PLAIN = "DSL", "plain"
ZERO_SHOT = "zero-shot"  # the method key of variants evaluated without training: CLIP's zero-shot retrieval

# Jiang et al., "Tencent Text-Video Retrieval: Hierarchical Cross-Modal Interactions with Multi-Level
# Representations", IEEE Access 2022 (arXiv:2204.03382). Its headline figures are listed with "+DSL" in the
# comparison table of VALOR (Chen et al., 2023, Table 3); its MSVD figure is 58.2 in IEEE Access (57.8 in arXiv v1).
HCMI_PAPER = "HCMI: Jiang et al., IEEE Access 2022 (arXiv:2204.03382); DSL per VALOR (Chen et al. 2023), Table 3"
# Luo et al., "CLIP4Clip", Neurocomputing 2022 (arXiv:2104.08860): the meanP rows, CLIP ViT-B/32, no DSL
CLIP4CLIP_PAPER = "CLIP4Clip: Luo et al., arXiv:2104.08860, meanP rows"

# The HCMI paper gives its best figure per dataset without naming the backbone next to it
UNSTATED_BACKBONE = "not stated (the paper's best setting)"


@dataclass(frozen=True)
class Figure:
    r1: float  # text-to-video R@1 on the dataset's standard test split
    backbone: str  # what the figure was measured with, as the source states it
    source: str
    protocol: str  # DSL or PLAIN
    verified: bool = True  # checked against the source by this project
    note: str = ""


def _hcmi(r1: float, note: str = "") -> Figure:
    return Figure(r1, UNSTATED_BACKBONE, HCMI_PAPER, DSL, note=note)


def _meanp(r1: float, verified: bool = True) -> Figure:
    note = "" if verified else "unverified: not checked against the paper's table"
    return Figure(r1, "ViT-B/32", CLIP4CLIP_PAPER, PLAIN, verified, note)


# dataset -> method (the model's head: hcmi, meanp; or ZERO_SHOT) -> backbone key -> figure; "reported" holds a
# figure whose backbone the source does not state. No zero-shot figure is recorded: published zero-shot CLIP figures
# exist (e.g. Portillo-Quintero et al., arXiv:2102.12443, for MSR-VTT and MSVD), but none was checked against its
# source by this project, so the zero-shot rows show "missing" rather than a number nobody verified.
T2V_R1: dict[str, dict[str, dict[str, Figure]]] = {
    "msrvtt": {"hcmi": {"reported": _hcmi(55.0)}, "meanp": {"ViT-B-32": _meanp(43.1)}},
    "msvd": {"hcmi": {"reported": _hcmi(58.2, "IEEE Access; arXiv v1: 57.8")}, "meanp": {"ViT-B-32": _meanp(46.2)}},
    "lsmdc": {"hcmi": {"reported": _hcmi(29.7)}, "meanp": {"ViT-B-32": _meanp(20.7, verified=False)}},
    "didemo": {"hcmi": {"reported": _hcmi(52.1)}, "meanp": {"ViT-B-32": _meanp(43.4)}},
    "activitynet": {"hcmi": {"reported": _hcmi(57.3)}, "meanp": {"ViT-B-32": _meanp(40.5)}},
}

# open_clip configs that are the same network as a published backbone (OpenAI's weights need QuickGELU)
ACTIVATION_VARIANT = "-quickgelu"


def backbone_key(name: str | None) -> str | None:
    return name.removesuffix(ACTIVATION_VARIANT) if name else name


def has_figures(dataset: str) -> bool:
    return dataset in T2V_R1


def published(dataset: str, head: str, backbone: str | None = None) -> Figure | None:
    """The published figure for this method on this dataset (for this backbone where the source says), or None."""
    entries = T2V_R1.get(dataset, {}).get(head, {})
    return entries.get(backbone_key(backbone)) or entries.get("reported")
