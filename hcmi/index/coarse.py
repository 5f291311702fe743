"""The coarse stage: a FAISS inner-product index over one stored vector per video (the video-sentence level), which
proposes the candidates that the full multi-level score re-ranks.

Up to EXACT_MAX_VIDEOS videos the index is exact (IndexFlatIP: float32 copies, every vector scanned per query).
Above, an inverted file with 8-bit scalar quantisation (IVF-SQ8): about 2 sqrt(N) k-means lists, one byte per
dimension, a quarter of the lists scanned per query. Why, measured with bench/search.py (synthetic HCMI-shaped data,
D=512, depth 200, k=10, one search thread on a shared 2-core machine):

- flat costs 2 KB of memory per video and a full scan per query. At 1M videos that is 2 GB (the searching process
  peaked at 2.9 GB) and 93 ms p50 per two-stage query, over the 1M budgets (2 GB, p95 100 ms); at 100k, 200 MB and
  20 ms with recall@10 0.99. Up to 250k a flat scan stays near 20 ms (a quarter of its 80 ms at 1M) and 0.5 GB,
  so exact is kept that far.
- IVF-SQ8 needs a quarter of the memory and a scanned code costs about a tenth of a float32 one: at 1M, 0.5 GB,
  19 ms p50 / 21 ms p95 per query (93 ms p95 with the store evicted from the page cache), 1.4 GB resident peak,
  recall@10 0.978, the same as the flat index's.
- Text queries lie far from every video (cross-modal cosine ~0.3), so the lists nearest a query often miss its
  answers, more so with few videos per list. Scanning a quarter of the lists: at 1M, the flat index's recall; at
  300k (a coarse-only run of the same generator), 99% of the flat top 10 within the IVF top 200; at 100k only 0.93
  against 0.99, where flat is cheap anyway. Scanning 1/16 of them lost 3 (1M) to 19 (100k) points. PQ codes (4-bit
  fast-scan, 64-128 bytes; 300k) kept only 42-79% of the flat top 10 within their top 200.

How well lists route depends on the data and the model, so `tune_nprobe` picks the fewest lists that reach a recall
target on sample queries (e.g. validation captions) and `save` keeps the choice.

The index lives beside the store (coarse.faiss + coarse.json: which store, how many rows, how it was built) and is a
derived file: `for_store` loads it, extends it with rows appended since, or rebuilds it when it no longer fits.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

# faiss's loader reports at INFO each optional build it could not import (No module named 'faiss.swigfaiss_avx2')
# before it loads the one it has: not news for someone searching
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from hcmi.files import atomic_path, read_json, write_json
from hcmi.index.errors import VideoIndexError
from hcmi.index.store import VideoStore

VIDEO_KEY = "video"
EXACT_MAX_VIDEOS = 250_000
IVF_PROBE_FRACTION = 0.25  # of the lists, scanned per query
IVF_TRAIN_PER_LIST = 40  # k-means sample per list: FAISS asks for at least 39
IVF_TRAIN_ITERATIONS = 10
TUNE_TARGET = 0.97  # share of the exact coarse top `depth` that tune_nprobe asks of the IVF top `depth`
RETRAIN_GROWTH = 2.0  # an IVF index trained on fewer than half of today's videos is rebuilt: its lists drift apart
ADD_BATCH_ROWS = 65_536
INDEX_FILE = "coarse.faiss"
KINDS = ("flat", "ivf")


def choose_kind(rows: int, exact_max: int = EXACT_MAX_VIDEOS) -> str:
    return "flat" if rows <= exact_max else "ivf"


def ivf_lists(rows: int) -> int:
    """About 2 sqrt(rows) lists, a power of two, at most one per 8 videos (tiny indexes)."""
    lists = 2 ** round(math.log2(max(1.0, 2 * math.sqrt(rows))))
    return max(1, min(lists, rows // 8))


def ivf_nprobe(lists: int, fraction: float = IVF_PROBE_FRACTION) -> int:
    return max(1, round(lists * fraction))


class CoarseIndex:
    def __init__(self, index, kind: str, key: str, store_uid: str, trained_rows: int, nprobe: int | None = None):
        self.index, self.kind, self.key = index, kind, key
        self.store_uid, self.trained_rows = store_uid, trained_rows
        self.nprobe = nprobe or (ivf_nprobe(faiss.extract_index_ivf(index).nlist) if kind == "ivf" else 1)

    @property
    def nprobe(self) -> int:
        """Lists scanned per query (IVF; ignored by the flat index)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = int(value)
        if self.kind == "ivf":
            ivf = faiss.extract_index_ivf(self.index)
            ivf.nprobe = max(1, min(self._nprobe, ivf.nlist))

    @property
    def rows(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def build(cls, store: VideoStore, kind: str | None = None, key: str = VIDEO_KEY,
              exact_max: int = EXACT_MAX_VIDEOS, nprobe: int | None = None, seed: int = 0) -> "CoarseIndex":
        """A new index over every stored row of `key`; `kind` None chooses by size; `nprobe` None scans
        IVF_PROBE_FRACTION of the lists."""
        dim = _vector_dim(store, key)
        kind = kind or choose_kind(store.rows, exact_max)
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "ivf":
            index = _trained_ivf(store, key, dim, seed)
        else:
            raise ValueError(f"coarse index kind: one of {', '.join(KINDS)}, not {kind!r}")
        coarse = cls(index, kind, key, store.uid, store.rows, nprobe)
        coarse.extend(store)
        return coarse

    def extend(self, store: VideoStore) -> None:
        """Add the store's rows appended since this index was built (row r of the store is FAISS label r)."""
        self._check_store(store)
        for start in range(self.rows, store.rows, ADD_BATCH_ROWS):
            self.index.add(_float32(store.read_range(start, start + ADD_BATCH_ROWS, keys=[self.key])[self.key]))

    def search(self, queries, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """[Q, D] query vectors -> (scores, rows), each [Q, depth] best first; rows -1 where fewer were found."""
        queries = _float32(np.asarray(queries))
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"coarse queries: shape [n, {self.dim}] expected, got {list(queries.shape)}")
        scores, rows = self.index.search(queries, max(1, min(depth, self.rows)))
        return scores, rows

    def tune_nprobe(self, store: VideoStore, queries, depth: int, target: float = TUNE_TARGET) -> float:
        """IVF only: the fewest lists to scan (nlist/64, doubling) for which the index's top `depth` holds `target`
        of the exact top `depth` of these query vectors (say, validation captions' sentence vectors: how well lists
        route depends on the data and the model). Sets nprobe (save() keeps it); returns the recall reached."""
        if self.kind != "ivf":
            return 1.0
        queries = _float32(np.asarray(queries))
        exact = _exact_top(store, self.key, queries, depth)
        lists = faiss.extract_index_ivf(self.index).nlist
        self.nprobe = max(1, lists // 64)
        while True:
            _, rows = self.search(queries, depth)
            recall = float(np.mean([len(np.intersect1d(got, want)) / len(want) for got, want in zip(rows, exact)]))
            if recall >= target or self.nprobe >= lists:
                return recall
            self.nprobe = min(lists, 2 * self.nprobe)

    def memory_bytes(self) -> int:
        """The index's payload in memory: float32 vectors (flat), or one code and one 8-byte id per video plus the
        list centroids (IVF)."""
        if self.kind == "flat":
            return self.rows * self.dim * 4
        ivf = faiss.extract_index_ivf(self.index)
        return self.rows * (ivf.code_size + 8) + ivf.nlist * self.dim * 4

    def save(self, path: Path) -> None:
        """`path` (the FAISS file) and path.json beside it, each written atomically; the JSON last, naming the
        number of rows the FAISS file holds, so a half-saved pair is detected and rebuilt."""
        path = Path(path)
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))
        write_json(_meta_path(path), {"kind": self.kind, "key": self.key, "store_uid": self.store_uid,
                                      "rows": self.rows, "trained_rows": self.trained_rows, "nprobe": self.nprobe})

    @classmethod
    def load(cls, path: Path, store: VideoStore, nprobe: int | None = None) -> "CoarseIndex":
        """The index saved at `path` for this store (VideoIndexError when it is absent, unreadable or another
        store's)."""
        path = Path(path)
        try:
            meta = read_json(_meta_path(path))
            index = faiss.read_index(str(path))
            coarse = cls(index, meta["kind"], meta["key"], meta["store_uid"], int(meta["trained_rows"]),
                         int(nprobe or meta["nprobe"]))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise VideoIndexError(f"{path}: no usable coarse index ({err})") from None
        if coarse.rows != meta["rows"] or coarse.kind not in KINDS:
            raise VideoIndexError(f"{path}: holds {coarse.rows} rows, its {_meta_path(path).name} says {meta['rows']}")
        coarse._check_store(store)
        return coarse

    @classmethod
    def for_store(cls, store: VideoStore, key: str = VIDEO_KEY, exact_max: int = EXACT_MAX_VIDEOS,
                  nprobe: int | None = None, path: Path | None = None) -> "CoarseIndex":
        """The store's coarse index, up to date: loaded from beside the store, extended with appended rows, or
        (re)built and saved when it is missing, damaged, of the wrong kind for today's size, or trained on too few
        rows."""
        path = Path(path) if path else store.path / INDEX_FILE
        try:
            coarse = cls.load(path, store, nprobe)
        except VideoIndexError:
            coarse = None
        if coarse is not None and coarse.key == key and coarse.kind == choose_kind(store.rows, exact_max) and (
                coarse.kind == "flat" or store.rows <= RETRAIN_GROWTH * coarse.trained_rows):
            if coarse.rows == store.rows:
                return coarse
            coarse.extend(store)
        else:
            coarse = cls.build(store, key=key, exact_max=exact_max, nprobe=nprobe)
        coarse.save(path)
        return coarse

    def _check_store(self, store: VideoStore) -> None:
        if store.uid != self.store_uid or store.rows < self.rows:
            raise VideoIndexError(f"{store.path}: the coarse index belongs to another store (or a longer one)")
        if _vector_dim(store, self.key) != self.dim:
            raise VideoIndexError(f"{store.path}: key {self.key!r} has another dimension than the coarse index")


def _exact_top(store: VideoStore, key: str, queries: np.ndarray, depth: int) -> list[np.ndarray]:
    """Per query, the rows of the `depth` largest inner products with the stored vectors (a blocked scan)."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, store.rows, ADD_BATCH_ROWS):
        block = _float32(store.read_range(start, start + ADD_BATCH_ROWS, keys=[key])[key])
        scores = np.concatenate([best_scores, queries @ block.T], axis=1)
        rows = np.concatenate([best_rows, np.broadcast_to(np.arange(start, start + len(block)),
                                                          (len(queries), len(block)))], axis=1)
        keep = np.argpartition(-scores, min(depth, scores.shape[1]) - 1, axis=1)[:, :depth]
        best_scores, best_rows = np.take_along_axis(scores, keep, 1), np.take_along_axis(rows, keep, 1)
    return list(best_rows)


def _trained_ivf(store: VideoStore, key: str, dim: int, seed: int):
    lists = ivf_lists(store.rows)
    index = faiss.index_factory(dim, f"IVF{lists},SQ8", faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(index).cp.niter = IVF_TRAIN_ITERATIONS  # lists need no converged k-means
    sample = np.random.default_rng(seed).choice(store.rows, min(store.rows, IVF_TRAIN_PER_LIST * lists), replace=False)
    index.train(_float32(store.read(np.sort(sample), keys=[key])[key]))
    return index


def _vector_dim(store: VideoStore, key: str) -> int:
    if store.rows == 0:
        raise VideoIndexError(f"{store.path}: the index holds no videos yet; append some first")
    schema = store.schema
    if key not in schema or len(schema[key][1]) != 1:
        raise VideoIndexError(f"{store.path}: the coarse index needs one vector per video under key {key!r}; "
                              f"the store holds {', '.join(f'{k} {s}' for k, (_, s) in schema.items())}")
    return schema[key][1][0]


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _float32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)
