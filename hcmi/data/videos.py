"""Finding video files by id, whatever their extension."""

from __future__ import annotations

from pathlib import Path

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".3gp", ".flv", ".wmv"}


def index_videos(folder: Path) -> dict[str, Path]:
    """video id (file stem) -> path, for every video-like file below `folder`."""
    found: dict[str, Path] = {}
    folder = Path(folder)
    if not folder.exists():
        return found
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith("."):
            found.setdefault(path.stem, path)
    return found


def match(video_ids: list[str], folder: Path) -> tuple[list[tuple[str, Path | None]], list[str]]:
    """Pair each id with its file; ids with no file get None (and are returned as missing, never dropped)."""
    files = index_videos(folder)
    pairs = [(vid, files.get(vid)) for vid in video_ids]
    return pairs, [vid for vid, path in pairs if path is None]
