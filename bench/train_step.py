"""Training-step cost of the real backbone path: CLIP4Clip-meanP and HCMI heads on the same open_clip backbone,
side by side, with synthetic inputs (random weights: speed does not depend on them).

    python bench/train_step.py                 # CPU: ViT-B-32, batch 8 x 12 frames at 224 px, 32 words
    python bench/train_step.py --device cuda   # GPU: ViT-B-32, bf16 autocast, batch 128 x 12 frames (+ peak memory)

Prints seconds per step (forward, backward, AdamW step) for both heads and the HCMI overhead over meanP.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402

from hcmi.config import load  # noqa: E402
from hcmi.losses import retrieval_loss  # noqa: E402
from hcmi.model import build_model, create_backbone  # noqa: E402
from hcmi.model.backbone import tokenizer  # noqa: E402
from hcmi.train import make_optimizer, param_groups  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CAPTION = "a man is playing a guitar on a stage while people dance and a woman sings into a microphone"


def measure(variant: str, args, device) -> dict:
    params = load([REPO / "params.yaml"])
    objective = params.variant(variant)
    torch.manual_seed(0)
    model = build_model(objective, create_backbone(args.backbone)).to(device)
    optimizer = make_optimizer(param_groups(model, 1e-4, 1.0, 0.1))
    size = model.backbone.image_size
    frames = torch.randint(0, 256, (args.batch, args.frames, size, size, 3), dtype=torch.uint8, device=device)
    mask = torch.ones(args.batch, args.frames, dtype=torch.bool, device=device)
    tokens = tokenizer(args.backbone, args.words)([CAPTION] * args.batch).to(device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())

    def step():
        with autocast:
            video, text = model(frames, mask, tokens)
            sims = model.level_similarities(text, video)
            loss, _ = retrieval_loss(sims, model.level_weights(), model.logit_scale, text=text, video=video,
                                     objective=objective, progress=0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    row = {"head": variant, "s_per_step": round(seconds, 3), "steps_per_s": round(1 / seconds, 2),
           "videos_per_s": round(args.batch / seconds, 1)}
    if device.type == "cuda":
        row["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    args.batch = args.batch or (128 if device.type == "cuda" else 8)
    rows = [measure(variant, args, device) for variant in ("baseline", "hcmi")]
    overhead = 100.0 * (rows[1]["s_per_step"] / rows[0]["s_per_step"] - 1.0)
    columns = ["head", "s_per_step", "steps_per_s", "videos_per_s"] + (["peak_gpu_mem_gb"] if device.type == "cuda"
                                                                       else [])
    print(table(rows, columns))
    print(f"\n{args.backbone}, batch {args.batch} x {args.frames} frames, {args.words} words, {device.type}"
          f"{' (bf16 autocast)' if device.type == 'cuda' else f', {torch.get_num_threads()} threads'}: "
          f"HCMI heads add {overhead:.1f}% to a meanP training step")
    save(f"train_step_{device.type}", {"rows": rows, "overhead_percent": round(overhead, 1), "backbone": args.backbone,
                                       "batch": args.batch, "frames": args.frames, "words": args.words})
    return 0


if __name__ == "__main__":
    sys.exit(main())
