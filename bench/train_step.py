"""Training-step cost of the real backbone path: CLIP4Clip-meanP and HCMI heads on the same open_clip backbone,
side by side, with synthetic inputs (random weights: speed does not depend on them).

    python bench/train_step.py                 # CPU: ViT-B-32, batch 8 x 12 frames at 224 px, 32 words
    python bench/train_step.py --device cuda   # GPU: ViT-B-32, bf16 autocast, batch 128 x 12 frames (+ peak memory)

Both heads share one backbone and their steps alternate, so drifts of the machine affect both alike; each head's
time is the median of its steps. Printed: seconds per training step (forward, backward, AdamW) per head, and the
overhead of HCMI's heads over meanP, also measured directly as the extra time of the heads alone (temporal
transformer, clustering, token-wise similarities, objective) on fixed backbone outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import pick_device, save, sync, table  # noqa: E402

from hcmi.config import load  # noqa: E402
from hcmi.losses import retrieval_loss  # noqa: E402
from hcmi.model import build_model, create_backbone  # noqa: E402
from hcmi.model.backbone import tokenizer  # noqa: E402
from hcmi.train import make_optimizer, param_groups  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CAPTION = "a man is playing a guitar on a stage while people dance and a woman sings into a microphone"
HEADS = ("baseline", "hcmi")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per head (alternating)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    args.batch = args.batch or (128 if device.type == "cuda" else 8)
    params = load([REPO / "params.yaml"])
    torch.manual_seed(0)
    backbone = create_backbone(args.backbone).to(device)
    objectives = {head: params.variant(head) for head in HEADS}
    models = {head: build_model(objectives[head], backbone).to(device) for head in HEADS}
    optimizers = {head: make_optimizer(param_groups(models[head], 1e-4, 1.0, 0.1)) for head in HEADS}
    size = backbone.image_size
    frames = torch.randint(0, 256, (args.batch, args.frames, size, size, 3), dtype=torch.uint8, device=device)
    mask = torch.ones(args.batch, args.frames, dtype=torch.bool, device=device)
    tokens = tokenizer(args.backbone, args.words)([CAPTION] * args.batch).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def step(head):
        model = models[head]
        with autocast:
            video, text = model(frames, mask, tokens)
            sims = model.level_similarities(text, video)
            loss, _ = retrieval_loss(sims, model.level_weights(), model.logit_scale, text=text, video=video,
                                     objective=objectives[head], progress=0.5)
        optimizers[head].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[head].step()

    times = {head: [] for head in HEADS}
    peak = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for head in HEADS:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            start = time.perf_counter()
            step(head)
            sync(device)
            if round_:
                times[head].append(time.perf_counter() - start)
            if device.type == "cuda":
                peak[head] = torch.cuda.max_memory_allocated() / 2**30
    heads_only = heads_alone(models, objectives, frames, mask, tokens, autocast, device)

    rows = []
    for head in HEADS:
        seconds = statistics.median(times[head])
        row = {"head": head, "s_per_step": round(seconds, 3), "steps_per_s": round(1 / seconds, 3),
               "videos_per_s": round(args.batch / seconds, 1), "heads_alone_s": round(heads_only[head], 4)}
        if head in peak:
            row["peak_gpu_mem_gb"] = round(peak[head], 2)
        rows.append(row)
    step_overhead = 100.0 * (rows[1]["s_per_step"] / rows[0]["s_per_step"] - 1.0)
    head_overhead = 100.0 * (heads_only["hcmi"] - heads_only["baseline"]) / rows[0]["s_per_step"]
    print(table(rows, list(rows[0])))
    print(f"\n{args.backbone}, batch {args.batch} x {args.frames} frames, {args.words} words, {device.type}"
          f"{' (bf16 autocast)' if device.type == 'cuda' else f', {torch.get_num_threads()} threads'}: "
          f"HCMI step vs meanP step {step_overhead:+.1f}% (median of {args.rounds} alternating steps each); "
          f"the HCMI heads' own extra time is {head_overhead:.1f}% of a meanP step")
    save(f"train_step_{device.type}", {"rows": rows, "overhead_percent": round(step_overhead, 1),
                                       "heads_overhead_percent": round(head_overhead, 2), "backbone": args.backbone,
                                       "batch": args.batch, "frames": args.frames, "words": args.words,
                                       "rounds": args.rounds})
    return 0


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
                    loss, _ = retrieval_loss(sims, model.level_weights(), model.logit_scale, text=text, video=video,
                                             objective=objectives[head], progress=0.5)
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
