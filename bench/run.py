"""Run every benchmark script and summarise their JSON results in data/bench/summary.md (the `bench` rule).

    python bench/run.py [--quick] [--only eval_similarity,train_step_cuda]

On a machine with a GPU, the evaluation benchmark runs on it and the training step is measured on both CPU and GPU
(train_step: CPU, train_step_cuda: GPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT_DIR  # noqa: E402

HERE = Path(__file__).resolve().parent
QUICK_ARGS = {"eval_similarity": ["--quick"], "frame_sampling": ["--videos", "1", "--seconds", "3"],
              "loader": ["--videos", "4", "--seconds", "2"],
              "train_step": ["--backbone", "hcmi-tiny", "--batch", "4", "--rounds", "1"], "search": ["--quick"],
              "numerics": ["--batch", "4", "--rounds", "1"]}
SCRIPTS = ("eval_similarity", "frame_sampling", "loader", "train_step", "train_step_cuda", "numerics", "search")
# compute.numerics' cost, measured on the default run's training step (hcmi-tiny, batch 32 x 8 frames)
NUMERICS_ARGS = ["--compare", "numerics", "--backbone", "hcmi-tiny", "--batch", "32", "--frames", "8",
                 "--rounds", "5"]


def _number(value) -> str:
    return "?" if value is None else f"{value:g}"


def summary_lines(results: dict) -> list[str]:
    lines = ["# hcmi performance", ""]
    machine = next(iter(results.values()))["machine"] if results else {}
    lines += [f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"
              + (f", GPU {machine['gpu']}" if "gpu" in machine else "") + f"; torch {machine.get('torch', '?')}", ""]
    if "eval_similarity" in results:
        r = results["eval_similarity"]
        lines += ["## Evaluation (multi-level N x M similarity)", "",
                  "| shape | N x M | block budget (MB) | hcmi (s) | matmul floor (s) | hcmi / floor "
                  "| per-pair loop (s) | speed-up |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {x['shape']} ({x.get('device', 'cpu')}) | {x['N x M']} | {_number(x.get('budget_mb'))} | "
                  f"{x['ours_s']} | {x['matmul_floor_s']} | {x['vs_floor']} | {x['per_pair_loop_s']} | "
                  f"{x['loop_speedup']}x |" for x in r["rows"]]
        memory = {k: v for k, v in r["memory"].items() if k != "budget_mb"}
        lines += ["", f"Peak working memory (block budget {r['memory']['budget_mb']:.0f} MB): "
                  + ", ".join(f"{k}: {v} MB" for k, v in memory.items()), ""]
    if "frame_sampling" in results:
        rows = results["frame_sampling"]["rows"]
        lines += ["## Frame sampling (12 frames of a 30 s, 30 fps video; videos/s per core)", "",
                  "| keyframe interval | seek + get_batch | decode all, pick 12 | speed-up |", "|---|---|---|---|"]
        lines += [f"| {x['keyframe interval']} | {x['seek (videos/s/core)']} | {x['decode all (videos/s/core)']} | "
                  f"{x['speed-up']}x |" for x in rows] + [""]
        lines += ["With 3 candidates per segment, JPEG-encoded (what `hcmi sample` writes): "
                  + "; ".join(f"{x['keyframe interval']}: {x['candidates + JPEG (videos/s/core)']} videos/s, "
                              f"{x['candidates cost (x today)']}x today's time" for x in rows), ""]
        lines += ["## Frame cache size (224 px; pan/zoom over a natural photo)", "",
                  "| clip | raw uint8, 1 frame/segment (bytes/video) | JPEG, 3 candidates (bytes/video) | JPEG / raw |",
                  "|---|---|---|---|"]
        lines += [f"| {x['clip']} | {x['raw uint8 (bytes/video)']} | {x['JPEG candidates (bytes/video)']} "
                  f"| {x['JPEG / raw']} |" for x in results["frame_sampling"].get("cache_bytes", [])] + [""]
    if "loader" in results:
        r = results["loader"]
        lines += ["## Training loader (videos/s per core)", ""] + [
            f"- {row['loader']}: {row['videos_per_s_per_core']}" for row in r["rows"]] + [
            f"- speed-up: {r['speedup']}x", f"- decoded frames kept: {r['kept_speedup']}x", ""] + [
            f"- JPEG decoder {row['decoder']}: {row['ms/frame']} ms/frame" for row in r.get("decoders", [])] + [""]
    if "numerics_cpu" in results:
        r = results["numerics_cpu"]
        lines += [f"## CPU kernels (compute.numerics; HCMI step, {r['backbone']}, batch {r['batch']} x {r['frames']} "
                  f"frames, {r['numerics']['cpu']})", "", "| numerics | torch kernels | s/step | x native |",
                  "|---|---|---|---|"]
        lines += [f"| {x['numerics']} | {x['torch_kernels']} | {x['s_per_step']} | {x['ratio_to_native']} |"
                  for x in r["numerics"]["rows"]] + [""]
    for name in sorted(n for n in results if n.startswith("train_step")):
        r = results[name]
        lines += [f"## Training step ({r['backbone']}, batch {r['batch']} x {r['frames']} frames, "
                  f"{name.split('_')[-1]})", ""]
        if "rows" in r:
            lines += [f"- {row['head']}: {row['s_per_step']} s/step" + (f", peak {row['peak_gpu_mem_gb']} GB"
                                                                        if "peak_gpu_mem_gb" in row else "")
                      for row in r["rows"]] + [f"- HCMI heads overhead: {r['overhead_percent']}%"]
        if "gradcache" in r:
            lines += gradcache_lines(r["gradcache"])
        lines += [""]
    if "search" in results:
        lines += search_lines(results["search"])
    return lines


def gradcache_lines(r: dict) -> list[str]:
    """HCMI's plain step against its gradient-cached step (bench/train_step.py's `gradcache` result)."""
    lines = [f"- gradient caching, chunks of {r['chunk']} (peak memory above the resting state, measured by "
             f"{r['memory_measured_by']}; estimate of hcmi.memory in brackets):"]
    lines += [f"  - {row['mode']}: {row['s_per_step']} s/step, peak {row['step_peak_mb']} MB "
              f"({row['estimated_step_peak_mb']} MB)" for row in r["rows"]]
    return lines + [f"  - cached / plain: {r['time_ratio']}x the time, {r['memory_ratio']}x the peak memory"]


def search_lines(r: dict) -> list[str]:
    lines = [f"## Two-stage search (coarse index, then the full score re-ranks the top {r['depth']}; k={r['k']})", "",
             "| videos | store (GB) | store write (s) | coarse | coarse build (s) | recall@10 | p50 (ms) | p95 (ms) "
             "| cold p95 (ms) | resident peak (MB) | exact, 1 query (s) | exact, batched (s/query) | speed-up (vs 1 "
             "query / batched) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for size in r["sizes"]:
        mine = [x for x in r["rows"] if x["videos"] == size["videos"] and x["depth"] == r["depth"]
                and "chosen" in x["coarse"]]
        warm = next((x for x in mine if x["cache"] == "warm"), {})
        cold = next((x for x in mine if x["cache"] == "cold"), {})
        kind = size["chosen_kind"]
        lines.append(f"| {size['videos']:,} | {size['store_gb']} | {size['store_write_s']} | {kind} | "
                     f"{size['coarse'][kind]['build_s']} | {warm.get('recall@10', '?')} | {warm.get('p50_ms', '?')} | "
                     f"{warm.get('p95_ms', '?')} | {cold.get('p95_ms', '?')} | {warm.get('rss_peak_mb', '?')} | "
                     f"{_number(size.get('exact_single_s_per_query'))} | {size['exact_batched_s_per_query']} | "
                     f"{_number(size.get('speedup_vs_exact_single'))}x / {size['speedup_vs_exact_batched']}x |")
    return lines + ["", "Latencies: one query at a time, one search thread; cold: the store evicted from the page "
                    "cache first. Exact: every video scored by the same multi-level scorer.", ""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, not a measurement)")
    parser.add_argument("--only", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                        help=f"comma-separated subset of: {', '.join(SCRIPTS)}")
    args = parser.parse_args(argv)
    import torch

    unknown = sorted(set(args.only or []) - set(SCRIPTS))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}")
    wanted = args.only or [n for n in SCRIPTS if n != "train_step_cuda" or (torch.cuda.is_available()
                                                                              and not args.quick)]
    runs = []
    for name in wanted:
        script, extra = ("train_step", ["--device", "cuda"]) if name == "train_step_cuda" else (name, [])
        if name == "numerics":
            script, extra = "train_step", NUMERICS_ARGS
        runs.append((script, extra + (QUICK_ARGS[name if name == "numerics" else script] if args.quick else [])))
    for name, extra in runs:
        print(f"== {name} {' '.join(extra)}", flush=True)
        subprocess.run([sys.executable, str(HERE / f"{name}.py"), *extra], check=True)
    results = {p.stem: json.loads(p.read_text()) for p in sorted(OUT_DIR.glob("*.json"))}
    path = OUT_DIR / "summary.md"
    path.write_text("\n".join(summary_lines(results)) + "\n")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
