"""Getting a dataset's raw files into data/raw/<dataset>/: generated (synthetic) or downloaded, then recorded in a
manifest (every file with its size and sha256) that is written last, so its presence means the step finished.

For a real dataset, in this order:
  1. files the user placed in the manual folder (data.<d>.source.manual_dir, default data/raw/<d>/manual) are
     hard-linked (or copied) into source/ and videos/: the only way for gated data (LSMDC), and a way to work offline;
  2. every registry Source not already satisfied is fetched over HTTP (standard library only) into
     downloads/<name>.part, resumed with a Range request after an interruption, checked against its sha256 and size
     where the registry knows them, renamed, then extracted into source/ or videos/ (archives) or moved there;
  3. what the parser and the sampler need is checked to be present; what is missing is listed with where to get it
     and which folder it goes into.
downloads/state.json records each finished Source (digest and the files it produced), so a re-run neither downloads
nor re-hashes what is already there.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import time
import zipfile
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from hcmi.data import datasets
from hcmi.data.datasets import VIDEOS, DatasetSpec, Source
from hcmi.data.videos import VIDEO_EXTENSIONS
from hcmi.errors import HcmiError
from hcmi.files import CHUNK_BYTES, fingerprint, read_json, sha256sum, write_json

log = logging.getLogger(__name__)

DOWNLOADS = "downloads"  # working folder below data/raw/<dataset>/: partial downloads, state, digest cache
ATTEMPTS = 5  # tries per file; each one resumes where the previous connection stopped
RETRY_WAIT_S = 2.0  # wait before retry k is k times this
TIMEOUT_S = 60.0  # socket timeout of one read
RETRIED_HTTP_STATUS = {408, 429, 500, 502, 503, 504}
RANGE_NOT_SATISFIABLE = 416


class DownloadError(HcmiError, RuntimeError):
    """A file could not be fetched, verified or unpacked; the message names it and says what to do."""


class ChecksumError(DownloadError):
    """A fetched file's sha256 (or size) differs from the registry's."""


class MissingFiles(DownloadError):
    """Files the user has to fetch by hand are not there; the message lists what goes where."""


# ----------------------------------------------------------------------------------------------------------------
# the manifest


def _cached_digest(path: Path, key: str, cache: dict) -> str:
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns]
    if cache.get(key, [None])[:2] == stamp:
        return cache[key][2]
    digest = sha256sum(path)
    cache[key] = stamp + [digest]
    return digest


def write_manifest(raw_dir: Path, dataset: str, fingerprint: str, downloads: dict | None = None,
                   digest_cache: Path | None = None) -> dict:
    """Every file of source/ and videos/ with size and sha256 (plus, for downloads, each Source's URL, digest and
    whether that digest was verified). `digest_cache` keeps digests by (size, mtime) so unchanged files of a
    multi-gigabyte dataset are not hashed again."""
    raw_dir = Path(raw_dir)
    cache = read_json(digest_cache) if digest_cache and digest_cache.exists() else {}
    files = {}
    for sub in ("source", "videos"):
        for path in sorted((raw_dir / sub).rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                key = str(path.relative_to(raw_dir))
                files[key] = {"size": path.stat().st_size, "sha256": _cached_digest(path, key, cache)}
    manifest = {"dataset": dataset, "fingerprint": fingerprint, "files": files}
    if downloads is not None:
        manifest["downloads"] = downloads
    if digest_cache:
        write_json(digest_cache, cache)
    write_json(raw_dir / "manifest.json", manifest)
    return manifest


# ----------------------------------------------------------------------------------------------------------------
# HTTP: resumable, verified


def _open(url: str, offset: int):
    headers = {"User-Agent": "hcmi-download"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urlopen(Request(url, headers=headers), timeout=TIMEOUT_S)


def _resumed_at(response, offset: int) -> int:
    """Where the body of `response` starts in the file: `offset` when the server honoured the Range request, 0 when
    it sent the whole file again."""
    if not offset or response.status != 206:
        return 0
    content_range = response.headers.get("Content-Range", "")
    start = content_range.removeprefix("bytes ").split("-", 1)[0]
    return offset if start.strip() == str(offset) else 0


def _transfer(url: str, part: Path) -> None:
    """Append the rest of `url` to `part`; raises ConnectionError when the connection ends before the announced
    length (http.client returns a short body silently)."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset)
    except HTTPError as exc:
        if exc.code == RANGE_NOT_SATISFIABLE and offset:
            return  # the part already holds every byte; verification decides whether it is the right file
        raise
    with response:
        start = _resumed_at(response, offset)
        length = response.headers.get("Content-Length")
        expected = start + int(length) if length is not None else None
        with open(part, "ab" if start else "wb") as out:
            while block := response.read(CHUNK_BYTES):
                out.write(block)
    received = part.stat().st_size
    if expected is not None and received < expected:
        raise ConnectionError(f"connection closed after {received} of {expected} bytes")


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, HTTPError):
        return exc.code in RETRIED_HTTP_STATUS
    return isinstance(exc, (OSError, http.client.HTTPException))


def http_download(url: str, dest: Path, attempts: int = ATTEMPTS) -> Path:
    """Fetch `url` into `dest`.part, resuming after interruptions; returns the complete .part file (the caller
    verifies it and renames it onto `dest`)."""
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, attempts + 1):
        try:
            log.info("fetching %s (%s)", url, f"resuming at {part.stat().st_size} bytes" if part.exists() else "new")
            _transfer(url, part)
            return part
        except (OSError, http.client.HTTPException) as exc:
            if not _retryable(exc) or attempt == attempts:
                kept = (f"; the partial data in {part} is kept, run the download again to resume"
                        if part.exists() and part.stat().st_size else "")
                raise DownloadError(f"{url}: {exc} (attempt {attempt} of {attempts}){kept}") from None
            log.warning("%s: %s; retrying (%d of %d)", url, exc, attempt + 1, attempts)
            time.sleep(RETRY_WAIT_S * attempt)
    raise AssertionError("unreachable")


def verify(path: Path, source: Source, origin: str) -> str:
    """sha256 of `path`; ChecksumError naming the file and both digests when the registry's digest (or size)
    differs. A bad download is moved aside to <name>.corrupt so the next run starts clean."""
    size = path.stat().st_size
    actual = sha256sum(path)
    problem = None
    if source.size is not None and size != source.size:
        problem = f"size {size} bytes, expected {source.size}"
    elif source.sha256 is not None and actual != source.sha256.lower():
        problem = f"sha256 {actual} does not match the expected {source.sha256}"
    if problem is None:
        return actual
    aside = path.with_name(source.filename + ".corrupt")
    os.replace(path, aside)
    raise ChecksumError(f"{source.filename} (from {origin}): {problem}; the bad file was moved to {aside}, run the "
                        f"download again to fetch it anew")


# ----------------------------------------------------------------------------------------------------------------
# placing files: links, archives


def link_file(src: Path, dest: Path) -> bool:
    """Hard-link (or, across file systems, copy) src to dest atomically; False when dest already holds it."""
    if dest.exists() and _same_file(src, dest):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link")
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, tmp)
    os.replace(tmp, dest)
    return True


def _same_file(a: Path, b: Path) -> bool:
    """The same inode (a hard link), or a copy with the same size and modification time (copy2 keeps it)."""
    if os.path.samefile(a, b):
        return True
    sa, sb = a.stat(), b.stat()
    return sa.st_size == sb.st_size and sa.st_mtime_ns == sb.st_mtime_ns


def _link_tree(src_dir: Path, dest_dir: Path) -> int:
    placed = 0
    for path in sorted(src_dir.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            placed += link_file(path, dest_dir / path.relative_to(src_dir))
    return placed


def extract(archive: Path, dest_dir: Path) -> dict[str, int]:
    """Unpack a zip or tar(.gz) archive into dest_dir (refusing paths that leave it); returns member path -> size."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                handle.extractall(dest_dir)  # zipfile drops absolute paths and '..' components itself
                return {info.filename: info.file_size for info in handle.infolist() if not info.is_dir()}
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as handle:
                handle.extractall(dest_dir, filter="data")  # rejects absolute paths, '..', devices, outside links
                return {member.name: member.size for member in handle.getmembers() if member.isfile()}
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"{archive}: cannot unpack into {dest_dir} ({type(exc).__name__}: {exc})") from None
    raise DownloadError(f"{archive}: expected a zip or tar archive, found neither")


# ----------------------------------------------------------------------------------------------------------------
# what is done already


class DownloadState:
    """downloads/state.json: per Source target, the digest it was verified with and the files it produced."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict = read_json(path) if path.exists() else {}

    def complete(self, source: Source, raw_dir: Path) -> bool:
        entry = self.entries.get(source.target)
        if not entry or entry.get("url") != source.url or entry.get("expected_sha256") != source.sha256:
            return False
        return all((raw_dir / rel).is_file() and (raw_dir / rel).stat().st_size == size
                   for rel, size in entry["files"].items())

    def record(self, source: Source, digest: str, files: dict[str, int]) -> None:
        self.entries[source.target] = {"url": source.url, "sha256": digest, "expected_sha256": source.sha256,
                                       "verified": source.sha256 is not None, "files": files}
        write_json(self.path, self.entries)


def _has_videos(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in VIDEO_EXTENSIONS for p in folder.rglob("*"))


def _present(name: str, folder: Path) -> bool:
    """An annotation file (anywhere below `folder`) or, for VIDEOS, at least one video file below folder/videos."""
    if name == VIDEOS:
        return _has_videos(folder / "videos")
    return folder.is_dir() and any(p.is_file() for p in folder.rglob(name))


# ----------------------------------------------------------------------------------------------------------------
# the steps


def place_manual_files(spec: DatasetSpec, manual_dir: Path, raw_dir: Path) -> int:
    """Link what the user placed in the manual folder: annotation files into source/, manual/videos/ into videos/."""
    if not manual_dir.is_dir():
        return 0
    placed = 0
    for name in spec.annotation_files:
        found = sorted((p for p in manual_dir.rglob(name) if p.is_file() and "videos" not in
                        p.relative_to(manual_dir).parts[:-1]), key=lambda p: len(p.parts))
        if found:
            placed += link_file(found[0], raw_dir / "source" / name)
    if (manual_dir / "videos").is_dir():
        placed += _link_tree(manual_dir / "videos", raw_dir / "videos")
    log.info("%s: %d files placed from %s", spec.name, placed, manual_dir)
    return placed


def source_url(source: Source, mirror: str | None) -> str:
    """The upstream URL, or the same file name below a mirror (an institutional copy, or the tests' local server)."""
    if not mirror:
        return source.url
    return f"{mirror.rstrip('/')}/{urlparse(source.url).path.rsplit('/', 1)[-1]}"


def obtain(source: Source, raw_dir: Path, manual_dir: Path, mirror: str | None, state: DownloadState) -> None:
    """Fetch (or take from the manual folder), verify, and unpack or place one Source; record it as done."""
    fetched = raw_dir / DOWNLOADS / source.filename
    by_hand = manual_dir / source.filename
    if by_hand.is_file():
        origin = str(by_hand)
        link_file(by_hand, fetched)
        digest = verify(fetched, source, origin)
    elif fetched.exists():  # verified and renamed by an earlier run that stopped before unpacking
        origin = str(fetched)
        digest = verify(fetched, source, origin)
    else:
        origin = source_url(source, mirror)
        part = http_download(origin, fetched)
        digest = verify(part, source, origin)
        os.replace(part, fetched)
    destination = (raw_dir / source.target).parent
    destination.mkdir(parents=True, exist_ok=True)
    if source.extract:
        members = _unpack_or_set_aside(fetched, destination)
        files = {str((destination / name).relative_to(raw_dir)): size for name, size in members.items()}
        fetched.unlink()
    else:
        os.replace(fetched, raw_dir / source.target)
        files = {source.target: (raw_dir / source.target).stat().st_size}
    state.record(source, digest, files)
    log.info("%s: %s (%s) -> %d files in %s", source.filename, digest[:12],
             "verified" if source.sha256 else "no published checksum; recorded", len(files), destination)


def _unpack_or_set_aside(archive: Path, destination: Path) -> dict[str, int]:
    """Unpack; an archive that cannot be unpacked is moved aside, so the next run fetches it anew."""
    try:
        return extract(archive, destination)
    except DownloadError as exc:
        aside = archive.with_name(archive.name + ".corrupt")
        os.replace(archive, aside)
        raise DownloadError(f"{exc}; it was moved to {aside}, run the download again to fetch it anew") from None


def _origin(spec: DatasetSpec, name: str) -> str:
    for manual in spec.manual_files:
        if manual.name == name:
            return manual.origin
    for source in spec.sources:
        if name in source.provides:
            return f"{source.url}" + (" (inside the archive)" if source.extract else "")
    return "see docs/datasets.md"


def check_complete(spec: DatasetSpec, raw_dir: Path, manual_dir: Path) -> None:
    """MissingFiles listing exactly what to fetch from where into which folder, when anything is absent."""
    missing = [name for name in spec.annotation_files if not _present(name, raw_dir / "source")]
    if not _present(VIDEOS, raw_dir):
        missing.append(VIDEOS)
    if not missing:
        return
    lines = [f"  {'video files' if name == VIDEOS else name} -> {manual_dir / name}\n      from {_origin(spec, name)}"
             for name in missing]
    raise MissingFiles(f"{spec.name}: {len(missing)} required item(s) missing. Fetch them into the manual folder as "
                       f"listed, then run `hcmi download --dataset {spec.name}` again:\n" + "\n".join(lines)
                       + (f"\n{spec.instructions}" if spec.instructions else ""))


def _announce_manual_files(spec: DatasetSpec, manual_dir: Path) -> None:
    log.info("%s needs files placed by hand in %s:\n%s%s", spec.name, manual_dir,
             "\n".join(f"  {m.name}  from {m.origin}" for m in spec.manual_files),
             f"\n{spec.instructions}" if spec.instructions else "")


def manual_folder(source_params: dict, raw_dir: Path) -> Path:
    configured = (source_params or {}).get("manual_dir")
    return Path(configured) if configured else Path(raw_dir) / "manual"


def fetch_real(spec: DatasetSpec, raw_dir: Path, manual_dir: Path, mirror: str | None = None) -> dict:
    """Steps 1-3 of the module docstring, then the manifest."""
    from dataclasses import asdict

    raw_dir = Path(raw_dir)
    if spec.manual_files:
        _announce_manual_files(spec, manual_dir)
    place_manual_files(spec, manual_dir, raw_dir)
    state = DownloadState(raw_dir / DOWNLOADS / "state.json")
    for source in spec.sources:
        by_hand = all(_present(name, manual_dir) for name in source.provides) if source.provides else False
        if by_hand or state.complete(source, raw_dir):
            log.info("%s: already present (%s)", source.filename, "manual folder" if by_hand else "verified earlier")
            continue
        obtain(source, raw_dir, manual_dir, mirror, state)
    check_complete(spec, raw_dir, manual_dir)
    stamp = fingerprint([asdict(s) for s in spec.sources], list(spec.annotation_files))
    return write_manifest(raw_dir, spec.name, stamp, downloads=state.entries,
                          digest_cache=raw_dir / DOWNLOADS / "digests.json")


def fetch(dataset: str, source, raw_dir: Path, workers: int = 1) -> dict:
    """Make data/raw/<dataset>/ complete; returns the manifest. `source`: the generator parameters (a
    SyntheticSource) for the generated benchmark, else params `data.<dataset>.source` as a dict."""
    from dataclasses import asdict

    spec = datasets.get(dataset)
    if spec.generated:
        from hcmi.data import synthetic

        synthetic.generate(source, raw_dir, workers=workers)
        return write_manifest(raw_dir, dataset, fingerprint(source.model_dump(), synthetic.GENERATOR_VERSION))
    return fetch_real(spec, raw_dir, manual_folder(source, raw_dir), source.get("mirror"))
