"""Parsers: each dataset's own annotation files -> one table (video_id, caption_id, text, split).

Optional columns, the synthetic benchmark's only (real datasets have none of them; nothing may require them):
  twin_id, twin_kind   the hard distractor of a video (val/test twin pairs; a training family's hard negative)
  group_id             the family of a training video, the twin pair of a val/test video (grouped batches)
  content_id           equal for videos that show the same events (true duplicates: captions interchangeable)
No torch here.

The real datasets follow the protocols of CLIP4Clip's data loaders (docs/datasets.md):
  msrvtt       train: every sentence of the 9k videos; test: the one JSFusion sentence of each 1k-A video
  msvd         train/val/test lists; every caption of a video is a row (test: multi-caption evaluation)
  lsmdc        one row per line of the tab-separated files (a clip id may repeat in training)
  didemo       per list video, its descriptions joined in file order: one paragraph query per video
  activitynet  per id, its sentences joined: one paragraph per video; val_1 is the "test" split
Annotation files are found by name anywhere below the source folder (archives unpack into sub-folders).
"""

from __future__ import annotations

import io
import json
import logging
import pickle
from collections import defaultdict
from pathlib import Path

import pandas as pd

from hcmi.data import datasets
from hcmi.data.videos import video_stem
from hcmi.errors import HcmiError

log = logging.getLogger(__name__)

COLUMNS = ["video_id", "caption_id", "text", "split"]
PARAGRAPH_CAPTION = "paragraph"  # caption_id suffix of the one joined query of a paragraph dataset's video


class AnnotationError(HcmiError, ValueError):
    """An annotation file is missing or malformed; the message names the file and the problem."""


# ----------------------------------------------------------------------------------------------------------------
# reading files


def find_file(source_dir: Path, name: str) -> Path:
    """The annotation file `name` below source_dir; the shallowest one when an archive and a manual copy both hold
    it (files placed by hand sit at the top)."""
    matches = sorted(Path(source_dir).rglob(name), key=lambda p: (len(p.parts), str(p)))
    matches = [p for p in matches if p.is_file()]
    if not matches:
        raise AnnotationError(f"{Path(source_dir) / name}: annotation file not found (looked in every folder below "
                              f"{source_dir}; run the download step)")
    return matches[0]


def _load_json(path: Path):
    if not path.exists():
        raise AnnotationError(f"{path}: annotation file not found")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from None


def _read_lines(path: Path) -> list[str]:
    # movie and web captions hold the odd stray byte; a replacement character must not block a benchmark
    return path.read_bytes().decode("utf-8", errors="replace").splitlines()


def _id_list(path: Path) -> list[str]:
    ids = [line.strip() for line in _read_lines(path) if line.strip()]
    _no_duplicates(ids, path, "video id")
    return ids


def _no_duplicates(ids: list[str], path: Path, what: str) -> None:
    seen = set()
    for value in ids:
        if value in seen:
            raise AnnotationError(f"{path}: {what} '{value}' is listed twice")
        seen.add(value)


def _csv_columns(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise AnnotationError(f"{path}: not a readable CSV file ({exc})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AnnotationError(f"{path}: missing column(s) {missing} (found {list(frame.columns)})")
    return frame[columns]


class _PlainDataUnpickler(pickle.Unpickler):
    """raw-captions.pkl is a dict of lists of token lists: nothing but plain containers may be rebuilt, so a
    tampered file cannot run code."""

    ALLOWED = {("collections", "defaultdict"), ("collections", "OrderedDict"), ("builtins", "dict"),
               ("builtins", "list")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain containers are expected)")


def _load_pickle(path: Path):
    try:
        return _PlainDataUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise AnnotationError(f"{path}: not a readable caption pickle ({exc})") from None


def _table(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


# ----------------------------------------------------------------------------------------------------------------
# the synthetic benchmark


SYNTHETIC_COLUMNS = ["twin_id", "twin_kind", "group_id", "content_id"]


def parse_synthetic(source_dir: Path) -> pd.DataFrame:
    path = Path(source_dir) / "captions.json"
    data = _load_json(path)
    rows = []
    try:
        for video in data["videos"]:
            extra = tuple(video.get(column) for column in SYNTHETIC_COLUMNS)
            if extra[2] is None or extra[3] is None:
                raise KeyError("group_id/content_id (written by generator version 2 and later)")
            for k, text in enumerate(video["captions"]):
                rows.append((video["video_id"], f"{video['video_id']}#{k}", text, video["split"], *extra))
    except (KeyError, TypeError) as exc:
        raise AnnotationError(f"{path}: unexpected structure ({exc!r})") from None
    return pd.DataFrame(rows, columns=COLUMNS + SYNTHETIC_COLUMNS)


# ----------------------------------------------------------------------------------------------------------------
# MSR-VTT


def _msrvtt_sentences(path: Path) -> dict[str, list[str]]:
    data = _load_json(path)
    sentences: dict[str, list[str]] = defaultdict(list)
    try:
        for sentence in data["sentences"]:
            sentences[sentence["video_id"]].append(sentence["caption"])
    except (KeyError, TypeError) as exc:
        raise AnnotationError(f"{path}: expected {{'sentences': [{{'video_id', 'caption'}}, ...]}} ({exc!r})") from None
    return sentences


def parse_msrvtt(source_dir: Path) -> pd.DataFrame:
    data_file, train_file, test_file = (find_file(source_dir, name) for name in datasets.MSRVTT_FILES)
    sentences = _msrvtt_sentences(data_file)
    train_ids = list(_csv_columns(train_file, ["video_id"])["video_id"])
    _no_duplicates(train_ids, train_file, "video_id")
    rows = []
    for video_id in train_ids:
        if not sentences.get(video_id):
            raise AnnotationError(f"{train_file}: video '{video_id}' has no sentence in {data_file}")
        rows += [(video_id, f"{video_id}#{k}", text, "train") for k, text in enumerate(sentences[video_id])]
    test = _csv_columns(test_file, ["key", "video_id", "sentence"])
    _no_duplicates(list(test["video_id"]), test_file, "video_id")
    rows += [(row.video_id, f"{row.video_id}#{row.key}", row.sentence, "test") for row in test.itertuples()]
    return _table(rows)


# ----------------------------------------------------------------------------------------------------------------
# MSVD


def _caption_text(tokens, path: Path, video_id: str) -> str:
    if isinstance(tokens, str):
        return tokens
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        return " ".join(tokens)
    raise AnnotationError(f"{path}: caption of '{video_id}' is neither a token list nor a string: {tokens!r:.80}")


def parse_msvd(source_dir: Path) -> pd.DataFrame:
    captions_file = find_file(source_dir, datasets.MSVD_FILES[0])
    captions = _load_pickle(captions_file)
    if not isinstance(captions, dict):
        raise AnnotationError(f"{captions_file}: expected a dict video id -> captions, found {type(captions).__name__}")
    rows = []
    for split, list_name in zip(datasets.SPLITS, datasets.MSVD_FILES[1:]):
        list_file = find_file(source_dir, list_name)
        for video_id in _id_list(list_file):
            if not captions.get(video_id):
                raise AnnotationError(f"{list_file}: video '{video_id}' has no captions in {captions_file}")
            rows += [(video_id, f"{video_id}#{k}", _caption_text(tokens, captions_file, video_id), split)
                     for k, tokens in enumerate(captions[video_id])]
    return _table(rows)


# ----------------------------------------------------------------------------------------------------------------
# LSMDC

LSMDC_FIELDS = 6  # clip id, start/end (aligned), start/end (extracted), sentence


def _lsmdc_rows(path: Path, split: str) -> list[tuple]:
    rows, occurrences = [], defaultdict(int)
    for line_number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != LSMDC_FIELDS:
            raise AnnotationError(f"{path}, line {line_number}: expected {LSMDC_FIELDS} tab-separated fields "
                                  f"(clip id, four timestamps, sentence), found {len(fields)}")
        clip_id, sentence = fields[0].strip(), fields[-1].strip()
        rows.append((clip_id, f"{clip_id}#{occurrences[clip_id]}", sentence, split))
        occurrences[clip_id] += 1
    return rows


def parse_lsmdc(source_dir: Path) -> pd.DataFrame:
    rows = []
    for split, name in zip(datasets.SPLITS, datasets.LSMDC_FILES):
        rows += _lsmdc_rows(find_file(source_dir, name), split)
    return _table(rows)


# ----------------------------------------------------------------------------------------------------------------
# paragraph datasets: DiDeMo, ActivityNet


def _paragraph_rows(video_ids: list[str], sentences: dict[str, list[str]], split: str, where: str) -> list[tuple]:
    """One row per listed video: its sentences joined in order. Listed videos without any sentence cannot be a
    query or a training pair; like the reference loaders we leave them out, and say so."""
    without = [v for v in video_ids if not sentences.get(v)]
    if without:
        log.warning("%s: %d listed videos have no sentence and are left out (e.g. %s)", where, len(without),
                    ", ".join(without[:3]))
    return [(v, f"{v}#{PARAGRAPH_CAPTION}", " ".join(s.strip() for s in sentences[v]), split)
            for v in video_ids if sentences.get(v)]


def _didemo_descriptions(path: Path) -> dict[str, list[str]]:
    entries = _load_json(path)
    descriptions: dict[str, list[str]] = defaultdict(list)
    try:
        for entry in entries:
            descriptions[video_stem(entry["video"])].append(entry["description"])
    except (KeyError, TypeError) as exc:
        raise AnnotationError(f"{path}: expected a list of {{'video', 'times', 'description'}} ({exc!r})") from None
    return descriptions


def parse_didemo(source_dir: Path) -> pd.DataFrame:
    rows = []
    for split in datasets.SPLITS:
        list_file = find_file(source_dir, f"{split}_list.txt")
        data_file = find_file(source_dir, f"{split}_data.json")
        video_ids = [video_stem(name) for name in _id_list(list_file)]
        rows += _paragraph_rows(video_ids, _didemo_descriptions(data_file), split, f"{list_file} / {data_file}")
    return _table(rows)


ACTIVITYNET_SPLIT_FILES = {"train": ("train_ids.json", "train.json"), "test": ("val_ids.json", "val_1.json")}


def _activitynet_sentences(path: Path) -> dict[str, list[str]]:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected {{video id: {{duration, timestamps, sentences}}}}")
    try:
        sentences = {video_id: list(entry["sentences"]) for video_id, entry in data.items()}
    except (KeyError, TypeError) as exc:
        raise AnnotationError(f"{path}: every video needs a 'sentences' list ({exc!r})") from None
    for video_id, texts in sentences.items():
        if not all(isinstance(text, str) for text in texts):
            raise AnnotationError(f"{path}: sentences of '{video_id}' are not all strings")
    return sentences


def _activitynet_ids(path: Path) -> list[str]:
    ids = _load_json(path)
    if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
        raise AnnotationError(f"{path}: expected a JSON list of video ids such as \"v_QOlSCBRmfWY\"")
    _no_duplicates(ids, path, "video id")
    return ids


def parse_activitynet(source_dir: Path) -> pd.DataFrame:
    rows = []
    for split, (ids_name, captions_name) in ACTIVITYNET_SPLIT_FILES.items():
        ids_file, captions_file = find_file(source_dir, ids_name), find_file(source_dir, captions_name)
        rows += _paragraph_rows(_activitynet_ids(ids_file), _activitynet_sentences(captions_file), split,
                                f"{ids_file} / {captions_file}")
    return _table(rows)


PARSERS = {
    "synthetic": parse_synthetic,
    "msrvtt": parse_msrvtt,
    "msvd": parse_msvd,
    "lsmdc": parse_lsmdc,
    "didemo": parse_didemo,
    "activitynet": parse_activitynet,
}


def parse(dataset: str, source_dir: Path) -> pd.DataFrame:
    table = PARSERS[datasets.get(dataset).name](Path(source_dir))
    check(table, f"{dataset} annotations ({source_dir})")
    _compare_with_protocol(table, datasets.get(dataset))
    return table


def _compare_with_protocol(table: pd.DataFrame, spec: datasets.DatasetSpec) -> None:
    """Warn (not fail) when a split's size differs from the standard protocol: partial downloads and test fixtures
    are legitimate, but a reader of the log should see that the numbers are not comparable with the paper's."""
    videos = table.groupby("split")["video_id"].nunique()
    differing = [f"{split} {int(videos.get(split, 0))} (protocol: {expected})"
                 for split, expected in spec.protocol_videos.items() if int(videos.get(split, 0)) != expected]
    if differing:
        log.warning("%s: annotated videos per split differ from the standard protocol: %s", spec.name,
                    ", ".join(differing))


def check(table: pd.DataFrame, what: str) -> None:
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise AnnotationError(f"{what}: missing columns {missing}")
    if table["caption_id"].duplicated().any():
        dup = table.loc[table["caption_id"].duplicated(), "caption_id"].iloc[0]
        raise AnnotationError(f"{what}: duplicate caption_id '{dup}'")
    empty = table["text"].astype(str).str.strip().eq("")
    if empty.any():
        raise AnnotationError(f"{what}: empty caption text for {table.loc[empty, 'caption_id'].iloc[0]}")


def split_table(table: pd.DataFrame, split: str) -> pd.DataFrame:
    return table[table["split"] == split].reset_index(drop=True)


def read_annotations(path: Path, dataset: str = "<dataset>") -> pd.DataFrame:
    """The parsed table written by the parse step; a missing or damaged file is an error that says how to remake it."""
    path = Path(path)
    remedy = f"run `hcmi parse --dataset {dataset}` (the workflow's parse step) to write it again"
    if not path.exists():
        raise AnnotationError(f"{path}: annotation table not found; {remedy}")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for truncated or foreign files
        raise AnnotationError(f"{path}: not a readable annotation table ({type(exc).__name__}); {remedy}") from None
    check(table, str(path))
    return table
