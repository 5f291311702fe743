"""Evaluation engine speed and memory: hcmi's blocked multi-level N x M similarity, measured side by side with
(a) the floor: one matmul per level with exactly the FLOPs the level needs, no reductions, no blocking, and
(b) the obvious implementation: a Python loop over (text, video) pairs (timed on a sample of pairs, scaled to N x M).
Peak working memory (beyond inputs and outputs) is measured at two test-set sizes in fresh processes.

    python bench/eval_similarity.py                 # MSR-VTT-1k shapes and ActivityNet shapes (scaled on CPU)
    python bench/eval_similarity.py --device cuda   # on the GPU; ActivityNet at its real 4,917 x 4,917
    python bench/eval_similarity.py --budget-mb 256 1024   # the engine at several block budgets
    python bench/eval_similarity.py --quick         # small shapes, for a smoke test

On a GPU every timing waits for the device (synchronize) and peak memory is the CUDA allocator's peak. The engine is
timed at each block budget given (default: 256 MB, and on a GPU also 4,096 MB: a GPU does a block's work in about a
millisecond, so small blocks leave it waiting on the host); peak memory is measured at the first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, pick_device, save, sync, table  # noqa: E402

from hcmi.scoring import block_sizes, level_similarity_matrices  # noqa: E402
from hcmi.model.hcmi import HCMI  # noqa: E402

SHAPES = {
    # name: (texts, videos, words, frames, phrases, clips, dim)
    "msrvtt-1k": (1000, 1000, 32, 12, 4, 4, 512),
    "activitynet-scaled": (400, 400, 64, 64, 4, 4, 512),
    "activitynet": (4917, 4917, 64, 64, 4, 4, 512),
    "quick": (120, 120, 16, 8, 4, 4, 64),
}
BUDGET_MB = 256.0
GPU_BUDGETS_MB = (256.0, 4096.0)
PAIR_SAMPLE = 1500


class Engine(torch.nn.Module):
    """HCMI's three levels over given representations (no encoders: the engine alone is measured)."""

    levels = ("video_sentence", "clip_phrase", "frame_word")
    weights = {level: 1.0 for level in levels}
    level_similarities = HCMI.level_similarities
    similarity_bytes_per_pair = HCMI.similarity_bytes_per_pair


def tokens(n, length, dim, gen, min_valid):
    x = torch.nn.functional.normalize(torch.randn(n, length, dim, generator=gen), dim=-1)
    valid = torch.randint(min_valid, length + 1, (n,), generator=gen)
    return x, torch.arange(length)[None] < valid[:, None]


def representations(shape, seed=0, device="cpu"):
    nt, nv, lw, lf, lp, lc, d = shape
    gen = torch.Generator().manual_seed(seed)
    words, word_mask = tokens(nt, lw, d, gen, lw // 3)
    phrases, phrase_mask = tokens(nt, lp, d, gen, 1)
    frames, frame_mask = tokens(nv, lf, d, gen, lf // 2)
    clips, clip_mask = tokens(nv, lc, d, gen, 1)
    text = {"sentence": torch.nn.functional.normalize(torch.randn(nt, d, generator=gen), dim=-1),
            "phrase": phrases, "phrase_mask": phrase_mask, "word": words, "word_mask": word_mask}
    video = {"video": torch.nn.functional.normalize(torch.randn(nv, d, generator=gen), dim=-1),
             "clip": clips, "clip_mask": clip_mask, "frame": frames, "frame_mask": frame_mask}
    move = lambda rep: {k: v.to(device) for k, v in rep.items()}  # noqa: E731
    return move(text), move(video)


FLOOR_CHUNK_MB = 1024.0


def floor(text, video) -> float:
    """One matmul per level, exactly the FLOPs that level needs: every valid text token against every valid video
    token (padding excluded). A level's product matrix larger than FLOOR_CHUNK_MB (ActivityNet at full size:
    ~(4,917 x 48)^2 floats, ~200 GB) is computed in row chunks into one reused buffer."""
    def columns(x):  # [D, tokens], zero columns appended up to a multiple of 16: 64-byte aligned output rows
        pad = -len(x) % 16
        return torch.cat([x, x.new_zeros(pad, x.shape[1])]).T.contiguous()

    pairs = [(text["sentence"], columns(video["video"]))]
    pairs += [(text[a][text[f"{a}_mask"]], columns(video[b][video[f"{b}_mask"]]))
              for a, b in (("phrase", "clip"), ("word", "frame"))]
    width = max(right.shape[1] for _, right in pairs)
    rows = max(1, int(FLOOR_CHUNK_MB * 2**20 // (4 * width)))
    buffer = torch.empty(rows * width, device=video["video"].device)  # contiguous views of it serve every level

    def run():
        for left, right in pairs:
            for r0 in range(0, len(left), rows):
                chunk = left[r0 : r0 + rows]
                torch.matmul(chunk, right, out=buffer[: len(chunk) * right.shape[1]].view(len(chunk), -1))
        sync(video["video"].device)

    with torch.no_grad():
        return best_time(run, repeat=2)


def per_pair_loop(text, video, sample: int, seed=0) -> float:
    """Seconds for all N x M pairs, scaled from `sample` random pairs computed one at a time (valid tokens only,
    like the engine), the fastest of three passes."""
    rng = np.random.default_rng(seed)
    nt, nv = len(text["sentence"]), len(video["video"])
    pairs = list(zip(rng.integers(0, nt, sample), rng.integers(0, nv, sample)))

    def one(i, j):
        s = float(text["sentence"][i] @ video["video"][j])
        for a, b in (("phrase", "clip"), ("word", "frame")):
            x = text[a][i][text[f"{a}_mask"][i]]
            y = video[b][j][video[f"{b}_mask"][j]]
            m = x @ y.T
            s += 0.5 * float(m.max(1).values.mean() + m.max(0).values.mean())
        return s

    with torch.no_grad():
        seconds = best_time(lambda: [one(i, j) for i, j in pairs], repeat=3, warmup=1)  # as ours: best of runs
    return seconds * nt * nv / sample


def peak_working_memory_mb(shape, device, budget_mb=BUDGET_MB) -> float:
    """Run the engine in a fresh process; its peak memory growth minus the output matrices (MB): resident memory on
    CPU, the CUDA allocator's peak on a GPU."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            f"import eval_similarity as b; print(b._measure_memory({tuple(shape)!r}, {str(device)!r}, {budget_mb!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now; VmHWM: peak of this program — unlike
    getrusage's ru_maxrss, which keeps the peak of the process it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field} (Linux only)")


def _measure_memory(shape, device="cpu", budget_mb=BUDGET_MB) -> float:
    device = torch.device(device)
    text, video = representations(shape, device=device)
    engine = Engine()
    with torch.no_grad():  # warm the allocator and libraries on a tiny problem first
        level_similarity_matrices(engine, *representations((4, 4, *shape[2:]), device=device), budget_mb, device)
    if device.type == "cuda":  # outputs land in host memory, so the device peak is working memory only
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        level_similarity_matrices(engine, text, video, budget_mb, device)
        return max(0.0, (torch.cuda.max_memory_allocated() - before) / 2**20)
    try:  # reset the peak to the current size (Linux >= 4.0), so only the computation below counts
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    before = _status_mb("VmRSS")
    out = level_similarity_matrices(engine, text, video, budget_mb)
    peak = _status_mb("VmHWM")
    outputs = sum(m.nbytes for m in out.values()) / 2**20
    return max(0.0, peak - before - outputs)


def bench_shape(name, shape, device, budgets) -> list[dict]:
    """One row per block budget: the engine's time, beside the floor and the loop (measured once per shape)."""
    text, video = representations(shape, device=device)
    engine = Engine()
    common = {"shape": name, "N x M": f"{shape[0]} x {shape[1]}", "matmul_floor_s": round(floor(text, video), 3),
              "per_pair_loop_s": round(per_pair_loop(text, video, min(PAIR_SAMPLE, shape[0] * shape[1])), 1)}
    rows = []
    for budget in budgets:
        ours = best_time(lambda: level_similarity_matrices(engine, text, video, budget, device), repeat=2)
        bt, bv = block_sizes(engine, text, video, budget)
        rows.append({**common, "budget_mb": budget, "blocks": f"{bt} x {bv}", "ours_s": round(ours, 3)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes only (smoke test)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--budget-mb", type=float, nargs="+", metavar="MB",
                        help=f"block budgets to time the engine at (default {BUDGET_MB:.0f}; on a GPU "
                             f"{' and '.join(f'{b:.0f}' for b in GPU_BUDGETS_MB)})")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    budgets = args.budget_mb or (list(GPU_BUDGETS_MB) if device.type == "cuda" else [BUDGET_MB])
    activitynet = "activitynet" if device.type == "cuda" else "activitynet-scaled"
    names = ["quick"] if args.quick else ["msrvtt-1k", activitynet]
    rows = []
    for name in names:
        for row in bench_shape(name, SHAPES[name], device, budgets):
            row["device"] = device.type
            row["vs_floor"] = round(row["ours_s"] / row["matmul_floor_s"], 2)
            row["loop_speedup"] = round(row["per_pair_loop_s"] / row["ours_s"], 1)
            rows.append(row)
    memory_shape = SHAPES["quick" if args.quick else "msrvtt-1k"]
    small, large = (list(memory_shape), list(memory_shape))
    small[0] = small[1] = memory_shape[0] // 2
    memory = {"budget_mb": budgets[0],
              f"N={small[0]}": round(peak_working_memory_mb(small, device, budgets[0]), 1),
              f"N={large[0]}": round(peak_working_memory_mb(large, device, budgets[0]), 1)}
    print(table(rows, ["shape", "device", "N x M", "budget_mb", "blocks", "ours_s", "matmul_floor_s", "vs_floor",
                       "per_pair_loop_s", "loop_speedup"]))
    print(f"\npeak working memory beyond inputs/outputs (MB), block budget {budgets[0]:.0f} MB: "
          + ", ".join(f"{k}: {v}" for k, v in memory.items() if k != "budget_mb"))
    path = save("eval_similarity", {"rows": rows, "memory": memory})
    print(f"written: {path}")
    print(json.dumps({"vs_floor": [r["vs_floor"] for r in rows], "loop_speedup": [r["loop_speedup"] for r in rows]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
