"""The dataset registry: what each benchmark is, where its files come from, and its evaluation protocol.

Frame and word counts per sample are parameters (params.yaml `data.<name>`), not facts of the dataset, so they live
there. Everything here is a fact about the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hcmi.errors import HcmiError


class UnknownDataset(HcmiError, KeyError):
    """A dataset name that is not in the registry."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Source:
    """One file to fetch: where from, where to (relative to data/raw/<dataset>/), and how to check it."""

    url: str
    target: str
    sha256: str | None = None
    size: int | None = None
    extract: bool = False  # unpack the archive into the target's folder after verification


SPLITS = ("train", "val", "test")  # every dataset's table uses these names; "test" is the split papers report on


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    splits: tuple[str, ...]  # the subset of SPLITS this dataset's protocol defines (others sample to empty caches)
    paragraph: bool  # paragraph-to-video retrieval: all sentences of a video joined into one query
    multi_caption: bool  # several query captions per test video (each is a query)
    generated: bool = False  # made by hcmi itself (the synthetic benchmark) instead of downloaded
    gated: bool = False  # the user must fetch (some) files by hand after registering
    sources: tuple[Source, ...] = field(default_factory=tuple)
    manual_files: tuple[str, ...] = ()  # files the user places by hand (relative to the manual folder)
    instructions: str = ""



SYNTHETIC = DatasetSpec(
    name="synthetic",
    title="Embedded synthetic benchmark (shapes and actions)",
    splits=("train", "val", "test"),
    paragraph=False,
    multi_caption=False,
    generated=True,
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (SYNTHETIC,)}


def get(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownDataset(f"unknown dataset '{name}' (known: {', '.join(sorted(DATASETS))})") from None
