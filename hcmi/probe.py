"""What the denoising and enhancement mechanisms act on, in real training batches (`hcmi probe`; docs/method.md).

A trained run's model sees grouped training batches as training built them (the run's seed, the epoch's order, two
views per video). Every ordered pair (i, j) of a batch, j != i, is classed by what video j is to video i, from the
benchmark's own labels: `copy` (the same events in the same order: a false negative), `order` or `binding` (its
twin), `family` (another member of its family: a copy's twin), `other`; a pair of two captions of one video is
left out (`same_video_pairs`), except as a hardest negative (`same video`). Counted per class:

- two-view label denoising: how many pairs the rule marks as latent positives (sim(v_i, v_j) > sim(v_i, v_i')), so
  its precision and recall split by what it marks, and the margin it works against: sim(v_i, v_i') - sim(v_i, v_j);
- marginal sample enhancement: the class of each text's hardest negative video (and each video's hardest negative
  text) on the final score, latent positives excluded as training excludes them; the share of rows whose twin is in
  the batch and is their hardest; and the triplet's gradient on that negative beside InfoNCE's at the learned
  logit scale (InfoNCE: softmax weight x scale; the triplet: its weight when the margin is violated, else 0).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from hcmi.data.annotations import read_annotations, split_table
from hcmi.data.frames import FrameCache
from hcmi.data.loader import CaptionVideoPairs, epoch_loader
from hcmi.losses import latent_positives, view_similarities
from hcmi.model.backbone import tokenizer

CLASSES = ("copy", "order", "binding", "family", "other")
SAME = "same video"  # another caption of the same video in the batch (grouped batches rarely hold one)


def _named(name: str) -> str:
    return SAME if name == "self" else name


def pair_classes(video_ids, contents, twins, twin_kinds, groups) -> np.ndarray:
    """[N, N] class names of (i, j) for one batch ('self' on the diagonal)."""
    n = len(video_ids)
    out = np.full((n, n), "other", dtype=object)
    for i in range(n):
        for j in range(n):
            if i == j or video_ids[i] == video_ids[j]:
                out[i, j] = "self"
            elif contents[i] == contents[j]:
                out[i, j] = "copy"
            elif twins[i] == video_ids[j] or twins[j] == video_ids[i]:
                out[i, j] = twin_kinds[i] if twins[i] == video_ids[j] else twin_kinds[j]
            elif groups[i] == groups[j]:
                out[i, j] = "family"
    return out


@torch.no_grad()
def probe(model, annotations_path, frames_dir, dataset: str, seed: int, max_words: int, batch_size: int,
          batches: int, epoch: int = 0, similarity: str = "frames", margin: float = 0.2) -> dict:
    """The counts of the module docstring over `batches` grouped training batches of `epoch`."""
    annotations = read_annotations(annotations_path, dataset)
    rows = split_table(annotations, "train").reset_index(drop=True)
    for column in ("content_id", "group_id", "twin_id", "twin_kind"):
        if column not in rows:
            raise ValueError(f"{annotations_path}: no column '{column}': the probe needs the embedded benchmark's "
                             "labels")
    cache = FrameCache(frames_dir)
    tokenize = tokenizer(model.backbone.name, max_words)
    pairs = CaptionVideoPairs(cache, list(rows["video_id"]), list(rows["text"]), tokenize, seed, views=2,
                              groups=list(rows["group_id"]))
    by_video = rows.drop_duplicates("video_id").set_index("video_id")
    pairs_per_class, flagged, hardest_t2v, hardest_v2t = Counter(), Counter(), Counter(), Counter()
    gaps: dict[str, list[float]] = {name: [] for name in CLASSES}
    twin_rows = twin_hardest = same_video = 0
    ratios: list[float] = []
    scale = float(model.logit_scale)
    loader = epoch_loader(pairs, batch_size, seed, epoch, groups=pairs.batch_groups)
    for b, (frames, mask, tokens, items) in enumerate(loader):
        if b >= batches:
            break
        ids = [pairs.video_ids[i] for i in items.tolist()]
        info = by_video.loc[ids]
        classes = pair_classes(ids, list(info["content_id"]), list(info["twin_id"]), list(info["twin_kind"]),
                               list(info["group_id"]))
        video, second = model.encode_video(frames[:, 0], mask), model.encode_video(frames[:, 1], mask)
        between, own = view_similarities(video, second, similarity)
        latent = latent_positives(between, own).numpy()
        gap = (own[:, None] - between).numpy()
        sim = model.combine(model.level_similarities(model.encode_text(tokens), video)).float()
        negatives = sim.masked_fill(torch.eye(len(sim), dtype=torch.bool) | torch.from_numpy(latent), float("-inf"))
        t2v, v2t = negatives.argmax(1).numpy(), negatives.argmax(0).numpy()
        softmax = torch.softmax(scale * sim, dim=1).numpy()
        diagonal = sim.diagonal().numpy()
        for i in range(len(ids)):
            for j in range(len(ids)):
                name = classes[i, j]
                if name == "self":
                    same_video += int(i != j)
                    continue
                pairs_per_class[name] += 1
                flagged[name] += int(latent[i, j])
                gaps[name].append(float(gap[i, j]))
            hardest_t2v[_named(classes[i, t2v[i]])] += 1
            hardest_v2t[_named(classes[v2t[i], i])] += 1
            if any(classes[i, j] in ("order", "binding") for j in range(len(ids))):
                twin_rows += 1
                twin_hardest += int(classes[i, t2v[i]] in ("order", "binding"))
            j = t2v[i]
            if margin - diagonal[i] + float(sim[i, j]) > 0:  # the triplet is active on this row
                ratios.append(1.0 / (scale * float(softmax[i, j])))
    total_flags = sum(flagged.values())
    seen = sum(hardest_t2v.values())
    return {
        "batches": min(batches, len(loader)), "batch_size": batch_size, "logit_scale": scale,
        "pairs": dict(pairs_per_class), "same_video_pairs": same_video,
        "flag_rate": {k: flagged[k] / pairs_per_class[k] for k in CLASSES if pairs_per_class[k]},
        "flag_share": {k: flagged[k] / total_flags for k in CLASSES if total_flags and flagged[k]},
        "precision": flagged["copy"] / total_flags if total_flags else float("nan"),
        "recall": flagged["copy"] / pairs_per_class["copy"] if pairs_per_class["copy"] else float("nan"),
        "view_gap_median": {k: float(np.median(v)) for k, v in gaps.items() if v},
        "hardest_t2v": {k: hardest_t2v[k] / seen for k in (*CLASSES, SAME) if hardest_t2v[k]},
        "hardest_v2t": {k: hardest_v2t[k] / seen for k in (*CLASSES, SAME) if hardest_v2t[k]},
        "twin_in_batch_rows": twin_rows,
        "twin_is_hardest": twin_hardest / twin_rows if twin_rows else float("nan"),
        "triplet_active_rows": len(ratios) / seen if seen else float("nan"),
        "triplet_to_infonce_gradient_median": float(np.median(ratios)) if ratios else float("nan"),
    }


def format_report(result: dict) -> str:
    """The probe's counts as a few readable lines."""
    pct = lambda mapping: ", ".join(f"{k} {100 * v:.1f} %" for k, v in mapping.items())  # noqa: E731
    lines = [f"{result['batches']} grouped batches of {result['batch_size']}; logit scale {result['logit_scale']:.1f}",
             "pairs by class: " + ", ".join(f"{k} {v}" for k, v in result["pairs"].items()),
             "two-view rule, marked per class: " + pct(result["flag_rate"]),
             "two-view rule, what it marks: " + pct(result["flag_share"]),
             f"latent precision {100 * result['precision']:.1f} %, recall {100 * result['recall']:.1f} %",
             "median sim(v_i, v_i') - sim(v_i, v_j): " + ", ".join(
                 f"{k} {v:+.3f}" for k, v in result["view_gap_median"].items()),
             "hardest negative video of a text: " + pct(result["hardest_t2v"]),
             "hardest negative text of a video: " + pct(result["hardest_v2t"]),
             f"rows with their twin in the batch: {result['twin_in_batch_rows']}; the twin is their hardest negative "
             f"in {100 * result['twin_is_hardest']:.1f} %",
             f"triplet active on {100 * result['triplet_active_rows']:.1f} % of rows; its gradient on the hardest "
             f"negative / InfoNCE's there: median {result['triplet_to_infonce_gradient_median']:.2f}"]
    return "\n".join(lines)
