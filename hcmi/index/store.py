"""An append-only, memory-mapped store of video representations, in one directory:

    store.json      the commit record: model fingerprint, caller's metadata, per-key row shape and dtype, row count
    <key>.bin       one raw little-endian array per representation key, rows one after another ([rows, ...])
    ids.txt         the video ids, one per line, in row order

An append writes the new rows after the committed ones, fsyncs them, and only then replaces store.json (atomically)
with the new row count. A crash before that leaves bytes past the committed rows, which readers ignore and the next
append overwrites; so an interrupted build reopens at its last committed size, and `missing(ids)` tells the caller
which videos still need encoding.

Token-level float arrays (two or more dimensions per row: clips, frames) are stored as float16 by default, halving
the disk and the page cache a search touches; per-row vectors (the coarse "video" vector) stay float32.
"""

from __future__ import annotations

import fcntl
import json
import math
import mmap
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from hcmi.files import read_json, write_json
from hcmi.index.errors import IndexCorrupt, IndexMismatch, IndexMissing, VideoIndexError

FORMAT = "hcmi-video-store"
VERSION = 1
META_FILE = "store.json"
IDS_FILE = "ids.txt"
LOCK_FILE = ".append.lock"
TOKEN_DTYPES = ("float16", "float32")
# Pages of a mapping that a search has read count in the process's resident memory until unmapped. After about this
# many bytes mapped they are dropped from the mapping; the page cache keeps them, so a re-read costs a minor fault.
RELEASE_AFTER_BYTES = 128 << 20
# A page fault maps the cached pages around the one asked for too (Linux's fault_around_bytes, 64 KiB by default),
# so each row read may map this much besides itself.
FAULT_AROUND_BYTES = 64 << 10
PREFETCH_MIN_BYTES = 2048  # smaller rows (masks) are read whole soon enough: not worth a system call each
_KEY = re.compile(r"[A-Za-z0-9_]+\Z")
_STORABLE_KINDS = "fbiu"  # float, bool, signed and unsigned integers: nothing that needs code to load


class VideoStore:
    """Open with `VideoStore.open` / `create` / `open_or_create`; one process appends at a time."""

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self._meta = meta
        self._map()

    # ---- opening -------------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path, fingerprint: str, metadata: Mapping | None = None,
               token_dtype: str = "float16") -> "VideoStore":
        path = Path(path)
        if (path / META_FILE).exists():
            raise VideoIndexError(f"{path}: a video index already exists here; open it, or delete the directory "
                                  "to start over")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError("fingerprint: a non-empty string that identifies the model")
        if token_dtype not in TOKEN_DTYPES:
            raise ValueError(f"token_dtype: one of {', '.join(TOKEN_DTYPES)}, not {token_dtype!r}")
        metadata = dict(metadata or {})
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as err:
            raise ValueError(f"metadata must be JSON-serialisable: {err}") from None
        meta = {"format": FORMAT, "version": VERSION, "fingerprint": fingerprint, "metadata": metadata,
                "token_dtype": token_dtype, "uid": uuid.uuid4().hex, "rows": 0, "ids_bytes": 0, "arrays": {}}
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / META_FILE, meta)
        return cls(path, meta)

    @classmethod
    def open(cls, path, fingerprint: str) -> "VideoStore":
        """The store at `path`, which must have been built by the model with this fingerprint."""
        path = Path(path)
        if not path.is_dir():
            raise IndexMissing(f"{path}: no video index here (no such directory); build it first")
        if not (path / META_FILE).is_file():
            raise IndexMissing(f"{path}: no video index here ({META_FILE} is missing); build it first")
        meta = _read_meta(path)
        if meta["fingerprint"] != fingerprint:
            raise IndexMismatch(f"{path}: built by model {meta['fingerprint']}, not by {fingerprint}; its vectors "
                                "cannot be compared with this model's: build a new index in another directory")
        return cls(path, meta)

    @classmethod
    def open_or_create(cls, path, fingerprint: str, metadata: Mapping | None = None,
                       token_dtype: str = "float16") -> "VideoStore":
        if (Path(path) / META_FILE).exists():
            return cls.open(path, fingerprint)
        return cls.create(path, fingerprint, metadata, token_dtype)

    # ---- what it holds -------------------------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        return self._meta["rows"]

    def __len__(self) -> int:
        return self.rows

    @property
    def fingerprint(self) -> str:
        return self._meta["fingerprint"]

    @property
    def uid(self) -> str:
        """Unique to this store's creation: a derived file (the coarse index) names the store it belongs to."""
        return self._meta["uid"]

    @property
    def metadata(self) -> dict:
        return json.loads(json.dumps(self._meta["metadata"]))

    @property
    def schema(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """{key: (stored dtype, shape of one row)}; empty until the first append."""
        return {key: (np.dtype(spec["dtype"]), tuple(spec["shape"])) for key, spec in self._meta["arrays"].items()}

    @property
    def ids(self) -> list[str]:
        if self._id_list is None:
            self._id_list = self._id_bytes.decode().split("\n")[:-1]
        return self._id_list

    def video_id(self, row: int) -> str:
        start = int(self._id_ends[row - 1]) + 1 if row > 0 else 0
        return self._id_bytes[start : int(self._id_ends[row])].decode()

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The ids not in the store, in the order given, each once: the videos the caller still has to encode."""
        if self._id_set is None:
            self._id_set = set(self.ids)
        out, seen = [], set()
        for video_id in ids:
            if video_id not in self._id_set and video_id not in seen:
                seen.add(video_id)
                out.append(video_id)
        return out

    # ---- reading -------------------------------------------------------------------------------------------------

    def read(self, rows, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """The given rows (ints, any order) of each key (default: all), copied out of the mappings, stored dtypes."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.rows):
            raise ValueError(f"{self.path}: rows must lie in [0, {self.rows}), got {rows.min()}..{rows.max()}")
        keys = self._keys(keys)
        for key in keys:
            self._prefetch(key, rows)
        out = {key: self._arrays[key][rows] for key in keys}
        self._note_read(sum(a.nbytes for a in out.values()) + len(rows) * len(keys) * FAULT_AROUND_BYTES)
        return out

    def read_range(self, start: int, stop: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Rows start..stop of each key (default: all), copied."""
        start, stop = max(0, start), min(stop, self.rows)
        keys = self._keys(keys)
        for key in keys:
            self._prefetch(key, np.array([start]), stop - start)
        out = {key: np.array(self._arrays[key][start:stop]) for key in keys}
        self._note_read(sum(a.nbytes for a in out.values()) + len(keys) * FAULT_AROUND_BYTES)
        return out

    def release(self) -> None:
        """Unmap the pages read so far (they stay in the page cache): bounds the resident memory of a long search."""
        for handle in self._mmap_of.values():
            handle.madvise(mmap.MADV_DONTNEED)
        self._read_bytes = 0

    def _prefetch(self, key: str, rows: np.ndarray, count: int = 1) -> None:
        """Ask the kernel to start reading `count` rows from each of `rows` at once. Rows not in the page cache
        then arrive in parallel instead of one page fault after another; the mappings themselves read no ahead."""
        array = self._arrays[key]
        row_bytes = array.itemsize * math.prod(array.shape[1:])
        if row_bytes * count < PREFETCH_MIN_BYTES or not len(rows) or key not in self._mmap_of:
            return
        mapped = self._mmap_of[key]
        for row in rows.tolist():
            start = row * row_bytes
            aligned = start - start % mmap.PAGESIZE
            mapped.madvise(mmap.MADV_WILLNEED, aligned, start + row_bytes * count - aligned)

    def _keys(self, keys):
        keys = list(self._arrays) if keys is None else list(keys)
        unknown = [k for k in keys if k not in self._arrays]
        if unknown:
            raise KeyError(f"{self.path}: no key {', '.join(unknown)} (the store holds {', '.join(self._arrays)})")
        return keys

    def _note_read(self, nbytes: int) -> None:
        """Count (an upper bound of) the bytes newly mapped by a read; release the mappings past the limit."""
        self._read_bytes += nbytes
        if self._read_bytes > RELEASE_AFTER_BYTES:
            self.release()

    # ---- appending -----------------------------------------------------------------------------------------------

    def append(self, ids: list[str], rep: Mapping) -> None:
        """Add videos: `rep` maps each key to an array (numpy or torch) whose first dimension is len(ids). Every
        append carries the same keys with the same row shapes; ids must be new (see `missing`)."""
        ids = list(ids)
        if not ids:
            return
        _check_ids(self.path, ids)
        arrays = {key: _to_numpy(key, value) for key, value in rep.items()}
        with self._append_lock():
            self._reload()
            new = set(self.missing(ids))
            present = [v for v in ids if v not in new]
            if present:
                raise VideoIndexError(f"{self.path}: {len(present)} ids are already stored (first: {present[0]!r}); "
                                      "append only missing(ids)")
            schema = self._checked_schema(arrays, len(ids))
            for key, spec in schema.items():
                data = _cast(self.path, key, arrays[key], np.dtype(spec["dtype"]))
                _append_bytes(self.path / f"{key}.bin", self.rows * _row_bytes(spec), data.reshape(-1).view(np.uint8))
            id_bytes = ("\n".join(ids) + "\n").encode()
            _append_bytes(self.path / IDS_FILE, self._meta["ids_bytes"], np.frombuffer(id_bytes, dtype=np.uint8))
            meta = {**self._meta, "rows": self.rows + len(ids), "ids_bytes": self._meta["ids_bytes"] + len(id_bytes),
                    "arrays": schema}
            write_json(self.path / META_FILE, meta)  # the commit
            self._meta = meta
            known = self._id_set
            self._map()
            if known is not None:  # kept up to date rather than rebuilt: a large build appends many times
                known.update(ids)
                self._id_set = known

    def _checked_schema(self, arrays: dict[str, np.ndarray], n: int) -> dict:
        for key, array in arrays.items():
            if not _KEY.match(key):
                raise ValueError(f"{self.path}: representation key {key!r}: letters, digits and _ only")
            if array.ndim == 0 or len(array) != n:
                raise ValueError(f"{self.path}: key {key!r} has {len(array) if array.ndim else 0} rows for {n} ids")
        stored = self._meta["arrays"]
        if not stored:
            return {key: {"dtype": _stored_dtype(key, a, self._meta["token_dtype"]).str, "shape": list(a.shape[1:])}
                    for key, a in sorted(arrays.items())}
        if set(arrays) != set(stored):
            raise ValueError(f"{self.path}: the store holds keys {sorted(stored)}, this append has {sorted(arrays)}")
        for key, spec in stored.items():
            if list(arrays[key].shape[1:]) != spec["shape"]:
                raise ValueError(f"{self.path}: key {key!r}: stored rows have shape {tuple(spec['shape'])}, "
                                 f"these have {arrays[key].shape[1:]}")
        return stored

    @contextmanager
    def _append_lock(self) -> Iterator[None]:
        with open(self.path / LOCK_FILE, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise VideoIndexError(f"{self.path}: another process is appending to this index") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _reload(self) -> None:
        """Another process may have appended since this one opened the store."""
        meta = _read_meta(self.path)
        if meta["uid"] != self.uid:
            raise VideoIndexError(f"{self.path}: the index was replaced by another one since it was opened")
        if meta != self._meta:
            self._meta = meta
            self._map()

    # ---- mapping the files ---------------------------------------------------------------------------------------

    def _map(self) -> None:
        self._arrays, self._mmap_of = {}, {}
        self._read_bytes = 0
        for key, spec in self._meta["arrays"].items():
            self._arrays[key] = self._map_array(key, spec)
        self._read_ids()
        self._id_list = self._id_set = None

    def _map_array(self, key: str, spec: dict) -> np.ndarray:
        path, dtype, shape = self.path / f"{key}.bin", np.dtype(spec["dtype"]), tuple(spec["shape"])
        need = self.rows * _row_bytes(spec)
        size = path.stat().st_size if path.is_file() else None
        if size is None or size < need:
            found = "is missing" if size is None else f"has {size} bytes"
            raise IndexCorrupt(f"{path}: {found}, but {META_FILE} commits {self.rows} rows ({need} bytes): the index "
                               "is damaged; delete the directory and rebuild it")
        if need == 0:
            return np.empty((0, *shape), dtype=dtype)
        with open(path, "rb") as handle:
            mapped = mmap.mmap(handle.fileno(), need, access=mmap.ACCESS_READ)
        mapped.madvise(mmap.MADV_RANDOM)  # a search reads scattered rows: read-ahead would fetch pages nobody uses
        self._mmap_of[key] = mapped
        return np.frombuffer(mapped, dtype=dtype).reshape(self.rows, *shape)

    def _read_ids(self) -> None:
        path, need = self.path / IDS_FILE, self._meta["ids_bytes"]
        data = b""
        if need:
            if not path.is_file() or path.stat().st_size < need:
                raise IndexCorrupt(f"{path}: missing or shorter than the {need} bytes {META_FILE} commits: the index "
                                   "is damaged; delete the directory and rebuild it")
            with open(path, "rb") as handle:
                data = handle.read(need)
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
        if len(ends) != self.rows or (self.rows and ends[-1] != need - 1):
            raise IndexCorrupt(f"{path}: {len(ends)} ids where {META_FILE} commits {self.rows}: the index is "
                               "damaged; delete the directory and rebuild it")
        self._id_bytes, self._id_ends = data, ends


# ---- helpers -----------------------------------------------------------------------------------------------------


def _read_meta(path: Path) -> dict:
    meta_path = path / META_FILE
    try:
        meta = read_json(meta_path)
    except (OSError, ValueError) as err:
        raise IndexCorrupt(f"{meta_path}: unreadable ({err}); delete the directory and rebuild the index") from None
    problem = _meta_problem(meta)
    if problem:
        raise IndexCorrupt(f"{meta_path}: {problem}; delete the directory and rebuild the index")
    return meta


def _meta_problem(meta) -> str | None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return f"not a {FORMAT} file"
    if meta.get("version") != VERSION:
        return f"format version {meta.get('version')!r}, this hcmi reads version {VERSION}"
    types = {"fingerprint": str, "metadata": dict, "token_dtype": str, "uid": str, "rows": int, "ids_bytes": int,
             "arrays": dict}
    for field, kind in types.items():
        if not isinstance(meta.get(field), kind):
            return f"field {field!r} missing or not a {kind.__name__}"
    if meta["rows"] < 0 or meta["ids_bytes"] < 0:
        return "negative row or byte count"
    for key, spec in meta["arrays"].items():
        try:
            ok = (_KEY.match(key) and np.dtype(spec["dtype"]).kind in _STORABLE_KINDS
                  and all(isinstance(n, int) and n >= 0 for n in spec["shape"]))
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            return f"array {key!r}: bad description {spec!r}"
    return None


def _row_bytes(spec: dict) -> int:
    return math.prod(spec["shape"]) * np.dtype(spec["dtype"]).itemsize


def _check_ids(path: Path, ids: list[str]) -> None:
    for video_id in ids:
        if not isinstance(video_id, str) or not video_id or "\n" in video_id or "\r" in video_id:
            raise ValueError(f"{path}: video id {video_id!r}: a non-empty string without line breaks")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate video ids in one append")


def _to_numpy(key: str, value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; bfloat16 has no numpy equivalent
        value = value.detach().cpu()
        value = (value.float() if value.is_floating_point() else value).numpy()
    array = np.asarray(value)
    if array.dtype.kind not in _STORABLE_KINDS:
        raise ValueError(f"key {key!r}: dtype {array.dtype} cannot be stored (floats, bools and integers only)")
    return array


def _stored_dtype(key: str, array: np.ndarray, token_dtype: str) -> np.dtype:
    if array.dtype.kind == "f":
        return np.dtype(token_dtype if array.ndim >= 3 else "float32").newbyteorder("<")
    return array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype


def _cast(path: Path, key: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if array.dtype.kind != dtype.kind and not (array.dtype.kind in "iu" and dtype.kind in "iu"):
        raise ValueError(f"{path}: key {key!r} is stored as {dtype}, this append gives {array.dtype}")
    out = np.ascontiguousarray(array, dtype=dtype)
    if dtype.kind == "f" and not np.isfinite(out).all():
        raise ValueError(f"{path}: key {key!r} holds NaN or infinite values (or values beyond {dtype})")
    if dtype.kind in "iu" and not np.array_equal(out, array):
        raise ValueError(f"{path}: key {key!r} holds integers that {dtype} cannot represent")
    return out


def _append_bytes(path: Path, committed: int, data: np.ndarray) -> None:
    """Write `data` at byte `committed` of `path` (dropping any uncommitted tail first) and flush it to disk."""
    with open(path, "r+b" if path.exists() else "w+b") as handle:
        handle.truncate(committed)
        handle.seek(committed)
        handle.write(memoryview(data))
        handle.flush()
        os.fsync(handle.fileno())
