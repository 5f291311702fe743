"""Finding video files by id, whatever their extension."""

from __future__ import annotations

from pathlib import Path

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".3gp", ".flv", ".wmv"}

# ActivityNet ids carry a "v_" prefix that some distributions (CLIP4Clip's among them) drop from the file names
DROPPABLE_ID_PREFIXES = ("v_",)


def video_stem(name: str) -> str:
    """A video name without its video extensions: DiDeMo names keep the original Flickr extension and downloads add
    another ("x.mov.mp4" -> "x"), while dotted ids stay whole ("clip_00.01.02.003-00.01.04.005.avi" -> its id)."""
    stem = name
    while Path(stem).suffix.lower() in VIDEO_EXTENSIONS:
        stem = stem[: -len(Path(stem).suffix)]
    return stem


def index_videos(folder: Path) -> dict[str, Path]:
    """video id -> path, for every video-like file below `folder`; a file answers to its stem and to its name
    without any video extension."""
    found: dict[str, Path] = {}
    folder = Path(folder)
    if not folder.exists():
        return found
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".") and path.is_file():
            found.setdefault(path.stem, path)
            found.setdefault(video_stem(path.name), path)
    return found


def _lookup(files: dict[str, Path], video_id: str) -> Path | None:
    if video_id in files:
        return files[video_id]
    for prefix in DROPPABLE_ID_PREFIXES:
        if video_id.startswith(prefix) and video_id[len(prefix):] in files:
            return files[video_id[len(prefix):]]
    return None


def match(video_ids: list[str], folder: Path) -> tuple[list[tuple[str, Path | None]], list[str]]:
    """Pair each id with its file; ids with no file get None (and are returned as missing, never dropped)."""
    files = index_videos(folder)
    pairs = [(vid, _lookup(files, vid)) for vid in video_ids]
    return pairs, [vid for vid, path in pairs if path is None]
