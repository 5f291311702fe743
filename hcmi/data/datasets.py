"""The dataset registry: what each benchmark is, where its files come from, and its evaluation protocol.

Frame and word counts per sample are parameters (params.yaml `data.<name>`), not facts of the dataset, so they live
there. Everything here is a fact about the benchmark.

Checksums: a `sha256` is recorded only where it is known from the publisher; `None` means "not verified against a
published digest" (the download step still hashes every file and records it in data/raw/<name>/manifest.json, so a
later change of the upstream file shows up there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hcmi import checks
from hcmi.errors import HcmiError


class UnknownDataset(HcmiError, KeyError):
    """A dataset name that is not in the registry."""

    def __str__(self) -> str:
        return str(self.args[0])


VIDEOS = "videos/"  # what a Source provides, or a ManualFile names, when it is the dataset's folder of video files


@dataclass(frozen=True)
class Source:
    """One file to fetch: where from, where to (relative to data/raw/<dataset>/), and how to check it."""

    url: str
    target: str
    sha256: str | None = None
    size: int | None = None
    extract: bool = False  # unpack the archive into the target's folder after verification (the archive is removed)
    provides: tuple[str, ...] = ()  # annotation file names (or VIDEOS) it yields: not fetched when already present

    @property
    def filename(self) -> str:
        return self.target.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ManualFile:
    """A file (or, for VIDEOS, the folder of video files) the user fetches by hand into the manual folder."""

    name: str  # path inside the manual folder (VIDEOS: the folder manual/videos/, any layout below it)
    origin: str  # where to get it


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
    manual_files: tuple[ManualFile, ...] = ()  # what the user places by hand (no public source provides it)
    instructions: str = ""
    annotation_files: tuple[str, ...] = ()  # the files the parser reads (found anywhere below data/raw/<name>/source)
    protocol_videos: dict[str, int] = field(default_factory=dict)  # videos per split in the standard protocol


SYNTHETIC = DatasetSpec(
    name="synthetic",
    title="Embedded synthetic benchmark (shapes and actions)",
    splits=("train", "val", "test"),
    paragraph=False,
    multi_caption=False,
    generated=True,
)

# Split and caption archives as CLIP4Clip (Luo et al. 2022) publishes them for its data loaders.
CLIP4CLIP_RELEASE = "https://github.com/ArrowLuo/CLIP4Clip/releases/download/v0.0"
COLLABORATIVE_EXPERTS = "https://raw.githubusercontent.com/albanie/collaborative-experts/master/misc/datasets"
LOCALIZING_MOMENTS = "https://raw.githubusercontent.com/LisaAnne/LocalizingMoments/master/data"

MSRVTT_FILES = ("MSRVTT_data.json", "MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv")
MSRVTT = DatasetSpec(
    name="msrvtt",
    title="MSR-VTT (9k training videos, 1k-A test split)",
    splits=("train", "test"),
    paragraph=False,
    multi_caption=False,
    sources=(
        Source(f"{CLIP4CLIP_RELEASE}/msrvtt_data.zip", "source/msrvtt_data.zip", extract=True,
               provides=MSRVTT_FILES),
        # the 10,000 videos as shared by Frozen in Time (Bain et al. 2021): MSRVTT/videos/all/video<N>.mp4, 6.5 GB
        Source("https://www.robots.ox.ac.uk/~maxbain/frozen-in-time/data/MSRVTT.zip", "videos/MSRVTT.zip",
               extract=True, provides=(VIDEOS,)),
    ),
    annotation_files=MSRVTT_FILES,
    protocol_videos={"train": 9000, "test": 1000},
)

MSVD_FILES = ("raw-captions.pkl", "train_list.txt", "val_list.txt", "test_list.txt")
MSVD = DatasetSpec(
    name="msvd",
    title="MSVD (1,200 / 100 / 670 videos, every test caption a query)",
    splits=("train", "val", "test"),
    paragraph=False,
    multi_caption=True,
    sources=(
        # raw-captions.pkl and the split lists of collaborative experts (Liu et al. 2019), repackaged by CLIP4Clip
        Source(f"{CLIP4CLIP_RELEASE}/msvd_data.zip", "source/msvd_data.zip", extract=True, provides=MSVD_FILES),
        Source("https://www.cs.utexas.edu/users/ml/clamp/videoDescription/YouTubeClips.tar", "videos/YouTubeClips.tar",
               extract=True, provides=(VIDEOS,)),
    ),
    annotation_files=MSVD_FILES,
    protocol_videos={"train": 1200, "val": 100, "test": 670},
)

LSMDC_PORTAL = "https://sites.google.com/site/describingmovies/download"
LSMDC_FILES = ("LSMDC16_annos_training.csv", "LSMDC16_annos_val.csv", "LSMDC16_challenge_1000_publictect.csv")
LSMDC = DatasetSpec(
    name="lsmdc",
    title="LSMDC (Large Scale Movie Description Challenge 2016, 1,000-clip public test)",
    splits=("train", "val", "test"),
    paragraph=False,
    multi_caption=False,
    gated=True,
    manual_files=(
        ManualFile(LSMDC_FILES[0], f"{LSMDC_PORTAL} (after registration: LSMDC 2016 annotations, training)"),
        ManualFile(LSMDC_FILES[1], f"{LSMDC_PORTAL} (after registration: LSMDC 2016 annotations, validation)"),
        ManualFile(LSMDC_FILES[2], f"{LSMDC_PORTAL} (after registration: LSMDC 2016 challenge, 1000 public test "
                                   "clips, under lsmdc2016/ on the protected download server)"),
        ManualFile(VIDEOS, f"{LSMDC_PORTAL} (after registration: the avi clips of all movies, any folder layout)"),
    ),
    instructions=(
        "LSMDC is released by MPI Informatics to registered users only. Register and accept the licence at "
        f"{LSMDC_PORTAL}; you receive credentials for the protected download server. Place the three annotation "
        "files (tab-separated, 6 columns) in the manual folder and the video clips (<clip id>.avi, per-movie "
        "folders are fine) below its videos/ folder, then run the download step again."
    ),
    annotation_files=LSMDC_FILES,
    protocol_videos={"train": 101079, "val": 7408, "test": 1000},
)

DIDEMO_FILES = ("train_list.txt", "val_list.txt", "test_list.txt", "train_data.json", "val_data.json",
                "test_data.json")
DIDEMO_VIDEOS = ("https://github.com/LisaAnne/LocalizingMoments (data/README.md: download_videos_AWS.py from the "
                 "YFCC100M multimedia-commons bucket, plus missing_videos_AWS.zip; or the Google Drive folder "
                 "linked there)")
DIDEMO = DatasetSpec(
    name="didemo",
    title="DiDeMo (paragraph-to-video: all descriptions of a video joined)",
    splits=("train", "val", "test"),
    paragraph=True,
    multi_caption=False,
    sources=tuple(
        Source(f"{COLLABORATIVE_EXPERTS}/didemo/{split}_list.txt", f"source/{split}_list.txt",
               provides=(f"{split}_list.txt",))
        for split in SPLITS
    ) + tuple(
        Source(f"{LOCALIZING_MOMENTS}/{split}_data.json", f"source/{split}_data.json",
               provides=(f"{split}_data.json",))
        for split in SPLITS
    ),
    manual_files=(ManualFile(VIDEOS, DIDEMO_VIDEOS),),
    instructions=(
        "DiDeMo's videos are Flickr videos without a single public archive: fetch them with the LocalizingMoments "
        "scripts (or its Google Drive mirror) into the manual folder's videos/ (names <video>.mp4 or the original "
        "<video> name as in the annotation files), then run the download step again."
    ),
    annotation_files=DIDEMO_FILES,
    # the collaborative-experts train list holds 8,392 of the paper's 8,395 training videos
    protocol_videos={"train": 8392, "val": 1065, "test": 1004},
)

ACTIVITYNET_FILES = ("train_ids.json", "val_ids.json", "train.json", "val_1.json")
ACTIVITYNET = DatasetSpec(
    name="activitynet",
    title="ActivityNet Captions (paragraph-to-video; val_1 is the test split)",
    splits=("train", "test"),
    paragraph=True,
    multi_caption=False,
    sources=(
        # ActivityNet Captions (Krishna et al. 2017): train/val_1/val_2 captions and the id lists
        Source("https://cs.stanford.edu/people/ranjaykrishna/densevid/captions.zip", "source/captions.zip",
               extract=True, provides=ACTIVITYNET_FILES),
    ),
    manual_files=(
        ManualFile(VIDEOS, "http://activity-net.org/download.html (request form of the ActivityNet organisers; "
                           "files v_<YouTube id>.mp4/.mkv/.webm, or <YouTube id>.* as CLIP4Clip names them)"),
    ),
    instructions=(
        "ActivityNet videos are distributed by the ActivityNet organisers on request (the YouTube originals are "
        "partly gone). Place the video files of the train and val_1 ids below the manual folder's videos/, then run "
        "the download step again."
    ),
    annotation_files=ACTIVITYNET_FILES,
    protocol_videos={"train": 10009, "test": 4917},
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (SYNTHETIC, MSRVTT, MSVD, LSMDC, DIDEMO, ACTIVITYNET)}


def get(name: str) -> DatasetSpec:
    """The registered dataset; a dataset derived from one for a mechanism check (hcmi/checks.py) is the registered
    one made with other parameters."""
    try:
        return DATASETS[checks.base_name(name)]
    except KeyError:
        raise UnknownDataset(f"unknown dataset '{name}' (known: {', '.join(sorted(DATASETS))})") from None
