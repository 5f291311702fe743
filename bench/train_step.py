"""Training-step cost of the real backbone path: CLIP4Clip-meanP and HCMI heads on the same open_clip backbone,
side by side, and HCMI's step with gradient caching against its plain step, with synthetic inputs (random weights:
speed does not depend on them).

    python bench/train_step.py                 # CPU: ViT-B-32, batch 8 x 12 frames at 224 px, 32 words, chunk 2
    python bench/train_step.py --device cuda   # GPU: ViT-B-32, bf16 autocast, batch 128 x 12 frames (+ peak memory)
    python bench/train_step.py --compare numerics --backbone hcmi-tiny --batch 32 --frames 8   # the default run's step

Heads: both share one backbone and their steps alternate, so drifts of the machine affect both alike; each head's
time is the median of its steps. Printed: seconds per training step (forward, backward, AdamW) per head, and the
overhead of HCMI's heads over meanP, also measured directly as the extra time of the heads alone (temporal
transformer, clustering, token-wise similarities, objective) on fixed backbone outputs.

Numerics (--compare numerics): HCMI's step with each compute.numerics mode (hcmi/numerics.py), every mode in fresh
processes of its own (a process's kernels are fixed at its first operation), the modes interleaved over two cycles;
each mode's time is the median of its steps, printed as a ratio to native (the machine's own kernels, unpinned).

Gradient caching (--chunk, default a quarter of the batch): plain and cached steps alternate in one process for the
times; the peak memory of each mode is measured in a fresh process of its own, after a warm-up step, as the growth
above the memory held between steps (parameters, gradients, AdamW states): on CUDA by torch.cuda.max_memory_allocated,
on the CPU by the kernel's peak resident set (VmHWM, reset through /proc/self/clear_refs) with glibc's mmap threshold
fixed so that freed tensors leave the resident set at once. Beside each, the estimate of hcmi.memory.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import pick_device, save, sync, table  # noqa: E402

from hcmi import numerics  # noqa: E402
from hcmi.config import load  # noqa: E402
from hcmi.gradcache import cached_backward  # noqa: E402
from hcmi.losses import retrieval_loss  # noqa: E402
from hcmi.memory import Workload, estimate_memory  # noqa: E402
from hcmi.model import create_backbone  # noqa: E402
from hcmi.model.factory import build_model  # noqa: E402
from hcmi.model.backbone import tokenizer  # noqa: E402
from hcmi.optim import make_optimizer, param_groups  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CAPTION = "a man is playing a guitar on a stage while people dance and a woman sings into a microphone"
HEADS = ("baseline", "hcmi")
MODES = ("plain", "cached")
COMPARISONS = ("heads", "views", "gradcache", "numerics")
NUMERICS_CYCLES = 2  # fresh processes per numerics mode, interleaved
GLIBC_MMAP_THRESHOLD = 65536  # fixed: glibc would otherwise raise it and keep freed tensors resident


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per head or mode (alternating)")
    parser.add_argument("--chunk", type=int, help="gradient-caching chunk size (default: a quarter of the batch)")
    parser.add_argument("--compare", default="heads,views,gradcache",
                        help="comma-separated: heads (meanP vs HCMI), views (HCMI with and without the second view), "
                             "gradcache (HCMI plain vs cached), numerics (HCMI's step per compute.numerics mode)")
    parser.add_argument("--memory-child", choices=MODES, help=argparse.SUPPRESS)  # one mode's peak, in a fresh process
    parser.add_argument("--numerics-child", choices=numerics.MODES, help=argparse.SUPPRESS)  # one mode's step times
    args = parser.parse_args(argv)
    args.compare = [x.strip() for x in args.compare.split(",") if x.strip()]
    unknown = sorted(set(args.compare) - set(COMPARISONS))
    if unknown or not args.compare:
        parser.error(f"--compare: choose from {', '.join(COMPARISONS)} (got {', '.join(unknown) or 'nothing'})")
    args.device = pick_device(args.device)
    args.batch = args.batch or (128 if args.device.type == "cuda" else 8)
    args.chunk = args.chunk or max(1, args.batch // 4)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args)))
        return 0
    if args.numerics_child:
        print(json.dumps(numerics_child(args)))
        return 0
    payload = {"backbone": args.backbone, "batch": args.batch, "frames": args.frames, "words": args.words,
               "rounds": args.rounds}
    where = (f"{args.backbone}, batch {args.batch} x {args.frames} frames, {args.words} words, {args.device.type}"
             + (" (bf16 autocast)" if args.device.type == "cuda" else f", {torch.get_num_threads()} threads"))
    if "numerics" in args.compare:
        payload["numerics"] = compare_numerics(args, where)
    if not set(args.compare) & {"heads", "views", "gradcache"}:
        save(f"numerics_{args.device.type}", payload)
        return 0
    bench = Bench(args, HEADS if "heads" in args.compare else ("hcmi",))
    if "heads" in args.compare:
        payload.update(compare_heads(bench, args.rounds, where))
    if "views" in args.compare:
        payload["views"] = compare_views(bench, args.rounds, where)
    if "gradcache" in args.compare:
        payload["gradcache"] = compare_gradcache(bench, args, where)
    save(f"train_step_{args.device.type}", payload)
    return 0


class Bench:
    """One backbone, the heads on it with their optimizers, and one synthetic batch, on the device."""

    def __init__(self, args, heads):
        device = self.device = args.device
        params = load([REPO / "params.yaml"])
        torch.manual_seed(0)
        backbone = create_backbone(args.backbone).to(device)
        self.objectives = {head: params.variant(head) for head in heads}
        self.models = {head: build_model(self.objectives[head], backbone).to(device) for head in heads}
        self.optimizers = {head: make_optimizer(param_groups(self.models[head], 1e-4, 1.0, 0.1)) for head in heads}
        size = backbone.image_size
        self.frames = torch.randint(0, 256, (args.batch, args.frames, size, size, 3), dtype=torch.uint8,
                                    device=device)
        self.mask = torch.ones(args.batch, args.frames, dtype=torch.bool, device=device)
        self.tokens = tokenizer(args.backbone, args.words)([CAPTION] * args.batch).to(device)

    @property
    def inputs(self):
        return self.frames, self.mask, self.tokens

    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def loss_fn(self, head, second=None, objective=None):
        model, objective = self.models[head], objective or self.objectives[head]

        def loss(video, text):
            sims = model.level_similarities(text, video)
            result = retrieval_loss(sims, model.level_weights(), model.logit_scale, text=text, video=video,
                                    second_view=second, objective=objective, progress=0.5)
            return result.total, result.parts
        return loss

    def step(self, head, chunk=None, set_to_none=True, two_views=True):
        """One training step of a head, as training runs it: plain (chunk None) or with gradient caching in chunks
        of `chunk` items; with two-view denoising, the second view is encoded without gradients first (two_views
        False: the same step without it and without denoising, to measure what the second view costs)."""
        model, optimizer, objective = self.models[head], self.optimizers[head], self.objectives[head]
        if not two_views:
            plain = objective.denoise.model_copy(update={"method": "none"})
            objective = objective.model_copy(update={"denoise": plain})
        second = None
        if objective.two_views:
            with torch.no_grad(), self.autocast():
                second = model.encode_video(self.frames.flip(0), self.mask)  # another draw: other frames
        optimizer.zero_grad(set_to_none=set_to_none)
        if chunk is None:
            with self.autocast():
                loss, _ = self.loss_fn(head, second, objective)(*model(*self.inputs))
            loss.backward()
        else:
            cached_backward(model, self.inputs, chunk, self.loss_fn(head, second, objective),
                            forward_context=self.autocast)
        optimizer.step()


def alternate(steps: dict, rounds: int, device) -> tuple[dict, dict]:
    """Median seconds of each named step, run in turn `rounds` times after one untimed round; on CUDA also each
    step's peak memory (GB)."""
    times = {name: [] for name in steps}
    peak = {}
    for round_ in range(rounds + 1):  # round 0 warms up
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            if round_:
                times[name].append(time.perf_counter() - start)
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated() / 2**30
    return {name: statistics.median(t) for name, t in times.items()}, peak


def compare_heads(bench: Bench, rounds: int, where: str) -> dict:
    seconds, peak = alternate({head: (lambda head=head: bench.step(head)) for head in HEADS}, rounds, bench.device)
    heads_only = heads_alone(bench.models, bench.objectives, bench.frames, bench.mask, bench.tokens,
                             bench.autocast(), bench.device)
    batch = bench.frames.shape[0]
    rows = []
    for head in HEADS:
        row = {"head": head, "s_per_step": round(seconds[head], 3), "steps_per_s": round(1 / seconds[head], 3),
               "videos_per_s": round(batch / seconds[head], 1), "heads_alone_s": round(heads_only[head], 4)}
        if head in peak:
            row["peak_gpu_mem_gb"] = round(peak[head], 2)
        rows.append(row)
    step_overhead = 100.0 * (rows[1]["s_per_step"] / rows[0]["s_per_step"] - 1.0)
    head_overhead = 100.0 * (heads_only["hcmi"] - heads_only["baseline"]) / rows[0]["s_per_step"]
    print(table(rows, list(rows[0])))
    print(f"\n{where}: HCMI step vs meanP step {step_overhead:+.1f}% (median of {rounds} alternating steps "
          f"each); the HCMI heads' own extra time is {head_overhead:.1f}% of a meanP step\n")
    return {"rows": rows, "overhead_percent": round(step_overhead, 1),
            "heads_overhead_percent": round(head_overhead, 2)}


def compare_views(bench: Bench, rounds: int, where: str) -> dict:
    """HCMI's step with the second view of two-view denoising against the same step without it."""
    seconds, _ = alternate({"two views": lambda: bench.step("hcmi"),
                            "one view": lambda: bench.step("hcmi", two_views=False)}, rounds, bench.device)
    overhead = 100.0 * (seconds["two views"] / seconds["one view"] - 1.0)
    print(f"\nHCMI step with the second view (encoded without gradients) vs without it, {where}: "
          f"{seconds['two views']:.3f} s vs {seconds['one view']:.3f} s, {overhead:+.1f}%")
    return {"two_views_s": round(seconds["two views"], 3), "one_view_s": round(seconds["one view"], 3),
            "overhead_percent": round(overhead, 1)}


def compare_gradcache(bench: Bench, args, where: str) -> dict:
    """HCMI's plain step against its gradient-cached step: time (alternating, one process) and peak memory (a fresh
    process per mode), with hcmi.memory's estimates beside the measured peaks."""
    seconds, _ = alternate({"plain": lambda: bench.step("hcmi"), "cached": lambda: bench.step("hcmi", args.chunk)},
                           args.rounds, bench.device)
    estimate = estimate_memory(Workload(args.backbone, bench.objectives["hcmi"], args.frames, args.words,
                                        bench.frames.shape[2], bench.device.type == "cuda", False))
    estimated = {"plain": estimate.peak(args.batch), "cached": estimate.cached_peak(args.batch, args.chunk)}
    resting = estimate.static + estimate.input_per_item * args.batch  # held between steps
    rows = []
    for mode in MODES:
        measured = measure_in_fresh_process(args, mode)
        rows.append({"mode": mode, "chunk": args.chunk if mode == "cached" else args.batch,
                     "s_per_step": round(seconds[mode], 3), "step_peak_mb": round(measured["step_peak_mb"], 1),
                     "estimated_step_peak_mb": round((estimated[mode] - resting) / 2**20, 1),
                     **({"peak_gpu_mem_gb": measured["peak_gpu_mem_gb"]} if "peak_gpu_mem_gb" in measured else {})})
    time_ratio = rows[1]["s_per_step"] / rows[0]["s_per_step"]
    memory_ratio = rows[1]["step_peak_mb"] / rows[0]["step_peak_mb"]
    print(table(rows, list(rows[0])))
    print(f"\n{where}: gradient caching in chunks of {args.chunk}: {time_ratio:.2f}x the plain step's time, "
          f"{memory_ratio:.2f}x its peak memory above the resting state (measured: "
          f"{'torch.cuda.max_memory_allocated' if bench.device.type == 'cuda' else 'VmHWM of a fresh process'}; "
          f"estimated: hcmi.memory)")
    return {"rows": rows, "chunk": args.chunk, "time_ratio": round(time_ratio, 2),
            "memory_ratio": round(memory_ratio, 2),
            "memory_measured_by": "cuda max_memory_allocated" if bench.device.type == "cuda" else "VmHWM"}


def _child_command(args, flag: str, mode: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), flag, mode, "--device", args.device.type, "--backbone",
            args.backbone, "--batch", str(args.batch), "--frames", str(args.frames), "--words", str(args.words),
            "--chunk", str(args.chunk), "--rounds", str(args.rounds)]


def compare_numerics(args, where: str) -> dict:
    """HCMI's step time under each compute.numerics mode, as a ratio to native."""
    times: dict[str, list[float]] = {mode: [] for mode in numerics.MODES}
    capability: dict[str, str] = {}
    unpinned = {k: v for k, v in os.environ.items() if k not in numerics.VARIABLES}
    for _ in range(NUMERICS_CYCLES):
        for mode in numerics.MODES:
            result = subprocess.run(_child_command(args, "--numerics-child", mode), capture_output=True, text=True,
                                    env=unpinned)
            if result.returncode:
                raise SystemExit(f"the {mode} numerics step failed:\n{result.stderr[-3000:]}")
            child = json.loads(result.stdout.strip().splitlines()[-1])
            times[mode] += child["seconds"]
            capability[mode] = child["capability"]
    seconds = {mode: statistics.median(t) for mode, t in times.items()}
    ratio = {mode: seconds[mode] / seconds["native"] for mode in numerics.MODES}
    rows = [{"numerics": mode, "torch_kernels": capability[mode], "s_per_step": round(seconds[mode], 4),
             "ratio_to_native": round(ratio[mode], 3)} for mode in numerics.MODES]
    print(table(rows, list(rows[0])))
    print(f"\n{where}: HCMI step, portable {ratio['portable']:.2f}x, vendor {ratio['vendor']:.2f}x and compatible "
          f"{ratio['compatible']:.2f}x the native step's time (median of {NUMERICS_CYCLES} x {args.rounds} "
          f"steps per mode, fresh processes, CPU: {numerics.cpu_model()})\n")
    return {"rows": rows, "cpu": numerics.cpu_model(), "cpu_flags": sorted(numerics.cpu_flags() &
                                                                          set(numerics.KERNEL_FLAGS))}


def numerics_child(args) -> dict:
    """Seconds of `rounds` HCMI steps after a warm-up step, with this process's kernels pinned to one mode."""
    numerics.pin(args.numerics_child)
    bench = Bench(args, ("hcmi",))
    bench.step("hcmi")
    seconds = []
    for _ in range(args.rounds):
        sync(bench.device)
        start = time.perf_counter()
        bench.step("hcmi")
        sync(bench.device)
        seconds.append(time.perf_counter() - start)
    return {"mode": args.numerics_child, "capability": torch.backends.cpu.get_cpu_capability(), "seconds": seconds}


def measure_in_fresh_process(args, mode: str) -> dict:
    command = _child_command(args, "--memory-child", mode)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(GLIBC_MMAP_THRESHOLD)}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"memory measurement of the {mode} step failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory_child(args) -> dict:
    """Peak memory of one step above the state held between steps (gradients kept, as hcmi.memory counts them among
    the static memory), after a warm-up step that allocates the AdamW states."""
    bench = Bench(args, ("hcmi",))
    chunk = args.chunk if args.memory_child == "cached" else None
    bench.step("hcmi", chunk, set_to_none=False)
    sync(bench.device)
    if bench.device.type == "cuda":
        resting = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        bench.step("hcmi", chunk, set_to_none=False)
        sync(bench.device)
        peak = torch.cuda.max_memory_allocated()
        return {"step_peak_mb": (peak - resting) / 2**20, "peak_gpu_mem_gb": round(peak / 2**30, 2)}
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what the warm-up freed leaves the resident set
    resting = _proc_status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    bench.step("hcmi", chunk, set_to_none=False)
    return {"step_peak_mb": (_proc_status_bytes("VmHWM") - resting) / 2**20}


def _proc_status_bytes(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) * 1024


def heads_alone(models, objectives, frames, mask, tokens, autocast, device, repeat: int = 5) -> dict:
    """Seconds for the heads' forward + backward on fixed backbone outputs (backbone cost excluded)."""
    backbone = models[HEADS[0]].backbone
    with torch.no_grad(), autocast:
        frame_emb = backbone.encode_frames(frames).float()
        words, sentence = backbone.encode_words(tokens)
    out = {}
    for head, model in models.items():
        backbone.encode_frames = lambda _f: frame_emb.detach().requires_grad_()
        backbone.encode_words = lambda _t: (words.float().detach().requires_grad_(),
                                            sentence.float().detach().requires_grad_())
        try:
            def run():
                with autocast:
                    video, text = model(frames, mask, tokens)
                    sims = model.level_similarities(text, video)
                    loss = retrieval_loss(sims, model.level_weights(), model.logit_scale, text=text, video=video,
                                          second_view=video if objectives[head].two_views else None,
                                          objective=objectives[head], progress=0.5).total
                loss.backward()

            run()
            sync(device)
            start = time.perf_counter()
            for _ in range(repeat):
                run()
            sync(device)
            out[head] = (time.perf_counter() - start) / repeat
        finally:  # back to the class's methods
            del backbone.encode_frames, backbone.encode_words
    return out


if __name__ == "__main__":
    sys.exit(main())
