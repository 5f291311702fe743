"""Two-stage text-to-video search at 10k, 100k and 1M videos: build time, resident memory of the searching process,
query latency, and recall@10 against the exact multi-level ranking (every video scored by the same scorer).

    python bench/search.py                                  # 10k, 100k, 1M videos (1M needs ~22 GB of free disk)
    python bench/search.py --sizes 10000 100000 --depth 200
    python bench/search.py --quick                          # 2,000 videos, a smoke test

Videos are synthetic but structured (HCMI's shapes: D=512, 12 frames, 4 clips; texts: 32 words, 4 phrases):
1,000 topic directions; a video's own vector = its topic + Gaussian spread; 3 event vectors around it; 12 frames,
4 per event in order, each around its event; clips = the means of 3 consecutive frames, video = the mean of its
clips, all L2-normalised; 8-12 valid frames. A query is built from a target video: 8-32 valid words, 40% of them a
random valid frame of the target plus heavy noise, the rest drawn from a shared vocabulary of 64 "function words"
plus the same noise; phrases = the means of 4 runs of words; sentence = the mean of the words plus noise. The noise
is set so that the levels disagree as in a trained model: at 100k the full score ranks the target first for about
95% of the queries, the video-sentence level alone for about 80%.

The scorer is HCMI's (hcmi.model.similarity: cosine at video-sentence, token-wise max-mean at clip-phrase and
frame-word, equal weights). Token arrays are float16 on disk, memory-mapped. Each coarse index kind is searched in a
fresh process (resident memory = its VmHWM; mapped store pages count in it); the chosen kind also runs once with the
store's pages evicted from the page cache first (posix_fadvise on the store's own files: a cold start). Latencies
are per single query, wall clock and CPU time (all threads), with --search-threads torch and FAISS threads (default
1: on a shared machine, threads that wait for each other at every parallel region multiply wall time; a server runs
one query per core instead). Exact search (all of the machine's threads) is timed one query at a time and batched
(the store read once for all queries, the cost shared). The load average during each search process is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402

from hcmi.index import CoarseIndex, VideoStore, choose_kind, exhaustive_search, recall_at_k, search  # noqa: E402
from hcmi.index.coarse import IVF_PROBE_FRACTION, ivf_lists, ivf_nprobe  # noqa: E402
from hcmi.index.search import as_tensors  # noqa: E402
from hcmi.model.similarity import cosine, max_mean, reused_pair_buffer  # noqa: E402

DIM, FRAMES, CLIPS, EVENTS, WORDS, PHRASES = 512, 12, 4, 3, 32, 4
TOPICS, VOCABULARY = 1000, 64
TOPIC_SPREAD, EVENT_SPREAD, FRAME_SPREAD = 1.0, 0.7, 0.5  # noise norms relative to the unit vector they perturb
WORD_NOISE, CONTENT_SHARE = 4.0, 0.4
CHUNK = 4096  # videos generated per seed: any size is a prefix of a larger one
SIZES = (10_000, 100_000, 1_000_000)
DEPTHS = (50, 100, 200, 500, 1000)
DEFAULT_DEPTH = 200
PROBE_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2)
QUERIES, QUERIES_LARGE, LARGE = 100, 50, 200_000
K = 10
BYTES_PER_VIDEO = FRAMES * DIM * 2 + CLIPS * DIM * 2 + DIM * 4 + FRAMES + CLIPS + 16  # the store (float16 tokens)
COARSE_BYTES_PER_VIDEO = DIM * 4 + DIM + 8  # flat + IVF-SQ8 files


def scorer(text, video):
    """HCMI's three levels, equal weights."""
    return (cosine(text["sentence"], video["video"])
            + max_mean(text["phrase"], text["phrase_mask"], video["clip"], video["clip_mask"])
            + max_mean(text["word"], text["word_mask"], video["frame"], video["frame_mask"])) / 3


def _noise(generator, *shape, scale):
    return torch.randn(*shape, DIM, generator=generator) * (scale / DIM ** 0.5)


def topic_centres(seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(TOPICS, DIM, generator=torch.Generator().manual_seed(seed)), dim=-1)


def video_chunk(index: int, rows: int, centres: torch.Tensor, seed: int,
                token_dtype=torch.float16) -> dict[str, np.ndarray]:
    """Chunk `index` of the synthetic collection (its own seed: the same videos whatever the collection size);
    tokens in `token_dtype` (float16 halves the data handed to the store, which stores them so anyway)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    own = F.normalize(centres[torch.randint(0, TOPICS, (rows,), generator=g)] + _noise(g, rows, scale=TOPIC_SPREAD),
                      dim=-1)
    events = F.normalize(own[:, None] + _noise(g, rows, EVENTS, scale=EVENT_SPREAD), dim=-1)
    frame = F.normalize(events[:, torch.arange(FRAMES) * EVENTS // FRAMES] + _noise(g, rows, FRAMES,
                                                                                      scale=FRAME_SPREAD), dim=-1)
    frame_mask = torch.arange(FRAMES)[None] < torch.randint(8, FRAMES + 1, (rows, 1), generator=g)
    frame = frame * frame_mask[..., None]
    clip_mask = frame_mask.view(rows, CLIPS, -1).any(2)
    clip = F.normalize(frame.view(rows, CLIPS, -1, DIM).sum(2), dim=-1) * clip_mask[..., None]
    video = F.normalize(clip.sum(1), dim=-1)
    return {"video": video.numpy(), "clip": clip.to(token_dtype).numpy(), "clip_mask": clip_mask.numpy(),
            "frame": frame.to(token_dtype).numpy(), "frame_mask": frame_mask.numpy()}


def make_queries(store: VideoStore, targets: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    n = len(targets)
    rows = as_tensors(store.read(np.sort(targets)))
    order = torch.from_numpy(np.argsort(np.argsort(targets)))
    frames, frame_mask = rows["frame"][order], rows["frame_mask"][order]
    words_valid = torch.randint(8, WORDS + 1, (n, 1), generator=g)
    word_mask = torch.arange(WORDS)[None] < words_valid
    pick = (torch.rand(n, WORDS, generator=g) * frame_mask.sum(1, keepdim=True)).long()  # valid frames come first
    content = frames[torch.arange(n)[:, None], pick]
    vocabulary = F.normalize(torch.randn(VOCABULARY, DIM, generator=g), dim=-1)
    filler = vocabulary[torch.randint(0, VOCABULARY, (n, WORDS), generator=g)]
    is_content = torch.rand(n, WORDS, generator=g)[..., None] < CONTENT_SHARE
    word = F.normalize(torch.where(is_content, content, filler) + _noise(g, n, WORDS, scale=WORD_NOISE), dim=-1)
    word = word * word_mask[..., None]
    run = (torch.arange(WORDS)[None] * PHRASES // words_valid).clamp(max=PHRASES - 1)  # 4 runs of valid words
    phrase = torch.stack([(word * ((run == p) & word_mask)[..., None]).sum(1) for p in range(PHRASES)], 1)
    sentence = F.normalize(word.sum(1) + _noise(g, n, scale=WORD_NOISE / 2), dim=-1)
    return {"sentence": sentence.numpy(), "phrase": F.normalize(phrase, dim=-1).numpy(),
            "phrase_mask": np.ones((n, PHRASES), dtype=bool), "word": word.numpy(), "word_mask": word_mask.numpy()}


def build_store(path: Path, size: int, seed: int, token_dtype: str = "float16") -> dict:
    store = VideoStore.create(path, "bench-synthetic", {"size": size, "seed": seed}, token_dtype=token_dtype)
    centres, generate_s, write_s = topic_centres(seed), 0.0, 0.0
    for index, start in enumerate(range(0, size, CHUNK)):
        t0 = time.perf_counter()
        rep = video_chunk(index, min(CHUNK, size - start), centres, seed)
        t1 = time.perf_counter()
        store.append([f"video{r}" for r in range(start, start + len(rep["video"]))], rep)
        generate_s, write_s = generate_s + t1 - t0, write_s + time.perf_counter() - t1
    return {"generate_s": round(generate_s, 1), "store_write_s": round(write_s, 1),
            "store_gb": round(sum(p.stat().st_size for p in path.iterdir()) / 1e9, 2)}


def exact(text: dict, store: VideoStore) -> tuple[list, float]:
    """The exact top K of every query, batched (the store read once), and its cost per query."""
    with reused_pair_buffer():
        t0 = time.perf_counter()
        hits = exhaustive_search(text, store, scorer, K)
    return hits, round((time.perf_counter() - t0) / len(hits), 3)


# ---- the searching process ---------------------------------------------------------------------------------------


def _status_kb() -> dict:
    fields = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name = line.split(":", 1)[0]
        if name in fields:
            out[name] = int(line.split()[1])
    return out


def _evict(store_dir: Path) -> None:
    """Drop this store's own files from the page cache (nothing else): the next reads come from disk."""
    for path in store_dir.iterdir():
        with open(path, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _timed_pass(text, store, coarse, depth) -> tuple[list, list, list]:
    """One query at a time: hits, wall-clock seconds and CPU seconds (all threads) per query."""
    hits, wall, cpu = [], [], []
    for q in range(len(text["sentence"])):
        query = {key: v[q : q + 1] for key, v in text.items()}
        w0, c0 = time.perf_counter(), time.process_time()
        hits += search(query, store, coarse, scorer, depth, K)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return hits, wall, cpu


def _exact_single(text, store, q) -> float:
    """Wall seconds to score every video for query q alone (same process and threads as the two-stage search)."""
    t0 = time.perf_counter()
    exhaustive_search({key: v[q : q + 1] for key, v in text.items()}, store, scorer, K)
    return time.perf_counter() - t0


def child(job: dict) -> dict:
    """Open the store and one coarse index, search every query at each depth (after a cold pass when asked)."""
    torch.set_num_threads(job["threads"])
    faiss.omp_set_num_threads(job["threads"])
    if job["cold"]:
        _evict(Path(job["store"]))
    with np.load(job["queries"], allow_pickle=False) as data:
        text = as_tensors({key: data[key] for key in data.files})
    with torch.no_grad():  # load the libraries' lazy parts on a throwaway problem (no store reads)
        scorer({k: v[:1] for k, v in text.items()}, {"video": torch.zeros(2, DIM), "clip": torch.zeros(2, CLIPS, DIM),
                                                      "clip_mask": torch.ones(2, CLIPS, dtype=torch.bool),
                                                      "frame": torch.zeros(2, FRAMES, DIM),
                                                      "frame_mask": torch.ones(2, FRAMES, dtype=torch.bool)})
    t0 = time.perf_counter()
    store = VideoStore.open(job["store"], "bench-synthetic")
    coarse = CoarseIndex.load(Path(job["coarse"]), store)
    out = {"open_s": round(time.perf_counter() - t0, 2), "passes": []}
    nprobes = [ivf_nprobe(ivf_lists(store.rows), f) for f in job["probe_fractions"]] if coarse.kind == "ivf" else [
        coarse.nprobe]
    plan = [(job["default_depth"], "cold", coarse.nprobe)] if job["cold"] else []
    plan += [(depth, "warm", nprobe) for nprobe in nprobes for depth in job["depths"]]
    with reused_pair_buffer():
        out["exact_single_s"] = [_exact_single(text, store, q) for q in range(job["exact_single"])]
        for depth, cache, nprobe in plan:
            coarse.nprobe = nprobe
            hits, wall, cpu = _timed_pass(text, store, coarse, depth)
            out["passes"].append({"depth": depth, "cache": cache, "nprobe": nprobe, "wall": wall, "cpu": cpu,
                                  "hits": [[video_id for video_id, _ in q] for q in hits]})
    out["memory_kb"] = _status_kb()
    out["load_average"] = round(os.getloadavg()[0], 1)  # other work on the machine during the passes
    return out


def run_child(job: dict, workdir: Path) -> dict:
    job_path, out_path = workdir / "job.json", workdir / "result.json"
    job_path.write_text(json.dumps(job))
    subprocess.run([sys.executable, __file__, "--child", str(job_path), str(out_path)], check=True)
    return json.loads(out_path.read_text())


# ---- one size ----------------------------------------------------------------------------------------------------


def _check_disk(root: Path, size: int) -> None:
    need = size * (BYTES_PER_VIDEO + COARSE_BYTES_PER_VIDEO) * 1.1
    free = shutil.disk_usage(root).free
    if free < need:
        raise SystemExit(f"{root}: {free / 1e9:.1f} GB free, {size:,} videos need about {need / 1e9:.1f} GB "
                         "(use --dir elsewhere or smaller --sizes)")


def build_coarse_indexes(store: VideoStore, workdir: Path) -> dict:
    """Both kinds, saved for the searching processes; their build time and memory."""
    info = {}
    for kind in ("flat", "ivf"):
        t0 = time.perf_counter()
        coarse = CoarseIndex.build(store, kind=kind)
        coarse.save(workdir / f"coarse-{kind}.faiss")
        info[kind] = {"build_s": round(time.perf_counter() - t0, 1), "memory_mb": round(coarse.memory_bytes() / 2**20)}
    return info


def pass_rows(result: dict, size: int, kind: str, chosen: str, exact_hits: list) -> list[dict]:
    """One table row per pass of a searching process."""
    memory, rows = result["memory_kb"], []
    for one in result["passes"]:
        ms, cpu_ms = np.array(one["wall"]) * 1000, np.array(one["cpu"]) * 1000
        label = kind if kind == "flat" else f"ivf/{ivf_lists(size)}, nprobe {one['nprobe']}"
        is_chosen = kind == chosen and (kind == "flat" or one["nprobe"] == ivf_nprobe(ivf_lists(size)))
        found = [[(video_id, 0.0) for video_id in q] for q in one["hits"]]
        rows.append({"videos": size, "coarse": label + (" (chosen)" if is_chosen else ""), "depth": one["depth"],
                     "cache": one["cache"], "recall@10": round(recall_at_k(found, exact_hits, K), 3),
                     "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
                     "mean_ms": round(float(ms.mean()), 1), "cpu_p50_ms": round(float(np.percentile(cpu_ms, 50)), 1),
                     "cpu_p95_ms": round(float(np.percentile(cpu_ms, 95)), 1),
                     "rss_peak_mb": round(memory["VmHWM"] / 1024),
                     "rss_anon_mb": round(memory.get("RssAnon", 0) / 1024),
                     "rss_file_mb": round(memory.get("RssFile", 0) / 1024), "load_avg": result["load_average"]})
    return rows


def bench_size(size: int, args, root: Path) -> tuple[list[dict], dict]:
    _check_disk(root, size)
    workdir = Path(tempfile.mkdtemp(prefix=f"search-{size}-", dir=root))
    try:
        print(f"== {size:,} videos: building the store in {workdir}", flush=True)
        store_dir = workdir / "store"
        summary = {"videos": size, **build_store(store_dir, size, args.seed)}
        store = VideoStore.open(store_dir, "bench-synthetic")
        chosen = choose_kind(size)
        summary.update(chosen_kind=chosen, coarse=build_coarse_indexes(store, workdir))
        n_queries = min(args.queries if size <= LARGE else args.queries_large, size)
        targets = np.random.default_rng(args.seed + 1).choice(size, n_queries, replace=False)
        text = make_queries(store, targets, args.seed + 2)
        np.savez(workdir / "queries.npz", **text)
        print(f"   exact multi-level ranking of {n_queries} queries", flush=True)
        exact_hits, exact_batched = exact(as_tensors(text), store)
        summary.update(queries=n_queries, exact_batched_s_per_query=exact_batched, exact_single_s_per_query=None,
                       target_top1_exact=round(float(np.mean([h[0][0] == f"video{t}"
                                                              for h, t in zip(exact_hits, targets)])), 3))
        rows = []
        for kind in (chosen, "ivf" if chosen == "flat" else "flat"):
            print(f"   searching with the {kind} coarse index", flush=True)
            result = run_child({"store": str(store_dir), "coarse": str(workdir / f"coarse-{kind}.faiss"),
                                "queries": str(workdir / "queries.npz"), "depths": list(args.depths),
                                "probe_fractions": list(args.probe_fractions), "threads": args.search_threads,
                                "exact_single": args.single_repeats if kind == chosen and size <= LARGE else 0,
                                "default_depth": args.depth, "cold": kind == chosen}, workdir)
            if result["exact_single_s"]:
                summary["exact_single_s_per_query"] = round(float(np.median(result["exact_single_s"])), 3)
            rows += pass_rows(result, size, kind, chosen, exact_hits)
        warm = next(r for r in rows if r["depth"] == args.depth and r["cache"] == "warm" and "chosen" in r["coarse"])
        for name in ("single", "batched"):
            if summary[f"exact_{name}_s_per_query"]:
                summary[f"speedup_vs_exact_{name}"] = round(summary[f"exact_{name}_s_per_query"] * 1000
                                                            / warm["mean_ms"])
        if args.float16_check:
            summary["float16_vs_float32"] = float16_effect(store, text, exact_hits, workdir, args.seed)
            args.float16_check = False  # once, at the first size
        return rows, summary
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def float16_effect(store: VideoStore, text: dict, exact_hits: list, workdir: Path, seed: int) -> dict:
    """The same collection with float32 tokens: how much the exact ranking moves when tokens are stored in float16
    (same queries, same scorer)."""
    full = workdir / "store-float32"
    store32 = VideoStore.create(full, "bench-synthetic", token_dtype="float32")
    centres = topic_centres(seed)
    for index, start in enumerate(range(0, store.rows, CHUNK)):
        rep = video_chunk(index, min(CHUNK, store.rows - start), centres, seed, token_dtype=torch.float32)
        store32.append([f"video{r}" for r in range(start, start + len(rep["video"]))], rep)
    with reused_pair_buffer():
        hits32 = exhaustive_search(as_tensors(text), store32, scorer, K)
    diffs = [abs(a[1] - b[1]) for h16, h32 in zip(exact_hits, hits32) for a, b in zip(h16, h32) if a[0] == b[0]]
    shutil.rmtree(full, ignore_errors=True)
    return {"videos": store.rows, "top10_overlap": round(recall_at_k(exact_hits, hits32, K), 4),
            "top1_same": round(float(np.mean([a[0][0] == b[0][0] for a, b in zip(exact_hits, hits32)])), 4),
            "max_score_diff": float(f"{max(diffs):.2g}") if diffs else None}


# ---- main --------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--queries", type=int, default=QUERIES, help=f"queries per size up to {LARGE:,} videos")
    parser.add_argument("--queries-large", type=int, default=QUERIES_LARGE,
                        help=f"queries per size above {LARGE:,} videos (exact scoring of every video is the cost)")
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="the depth the summary reports")
    parser.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS), help="depths measured")
    parser.add_argument("--probe-fractions", type=float, nargs="+", default=list(PROBE_FRACTIONS),
                        help="shares of the IVF lists scanned per query, measured")
    parser.add_argument("--search-threads", type=int, default=1,
                        help="torch and FAISS threads of the searching process (one query at a time)")
    parser.add_argument("--single-repeats", type=int, default=3, help="exact single-query timings per size")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the stores go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-float16-check", dest="float16_check", action="store_false")
    parser.add_argument("--quick", action="store_true", help="2,000 videos, 8 queries (a smoke test)")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        job, out = args.child
        out.write_text(json.dumps(child(json.loads(job.read_text()))))
        return 0
    if args.quick:
        args.sizes, args.queries, args.depths, args.depth, args.single_repeats = [2000], 8, [20, 50], 50, 1
        args.probe_fractions = [1 / 8]
    args.depths = sorted(set(args.depths) | {args.depth})
    args.probe_fractions = sorted(set(args.probe_fractions) | {IVF_PROBE_FRACTION})
    rows, summaries = [], []
    for size in args.sizes:
        size_rows, summary = bench_size(size, args, args.dir)
        rows += size_rows
        summaries.append(summary)
        print(table(size_rows, list(size_rows[0])), flush=True)
        print(json.dumps(summary), flush=True)
    path = save("search", {"depth": args.depth, "k": K, "rows": rows, "sizes": summaries,
                           "threads": {"search": args.search_threads, "exact": torch.get_num_threads()}})
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
