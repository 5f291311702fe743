"""`hcmi plan`: before queuing, the estimated peak GPU memory of every training job of the configuration, and the
gradient-caching chunk each will use (train.gradcache_chunk; `auto` picks the largest that fits
compute.gpu_memory_gb). docs/scaling.md explains how the estimate is made and how to read it. The estimate is
hcmi/memory.py's (training's code); the plan's rows and table are made here, outside training's code, so editing
them re-runs no training."""

from __future__ import annotations

from dataclasses import dataclass

from hcmi.memory import (GB, MB, MemoryEstimate, MemoryPlanError, Workload, estimate_memory, gigabytes, job_workload,
                         largest_chunk, workload_key)


@dataclass(frozen=True)
class PlanJob:
    """One training job of the plan: which data and model, and how it is trained."""

    dataset: str
    model: str
    workload: Workload
    batch: int
    gpus: int = 1


def plan_rows(jobs: list[PlanJob], budget_bytes: int) -> list[dict]:
    """One row per job: the memory of its plain step, and the gradient-caching chunk that fits budget_bytes."""
    estimates: dict = {}
    rows = []
    for job in jobs:
        key = workload_key(job.workload)
        if key not in estimates:
            estimates[key] = estimate_memory(job.workload)
        rows.append(plan_row(job, estimates[key], budget_bytes))
    return rows


def plan_row(job: PlanJob, estimate: MemoryEstimate, budget_bytes: int) -> dict:
    """The job's memory; when its plain step does not fit, the largest gradient-caching chunk that does (chunk and
    cached_peak_gb are None when no caching is needed or none fits; the note says which)."""
    w = job.workload
    peak = estimate.peak(job.batch, job.gpus)
    row = {"dataset": job.dataset, "model": job.model, "backbone": w.backbone, "frames": w.frames,
           "words": w.words, "batch": job.batch, "gpus": job.gpus, "amp": w.amp, "checkpointing": w.checkpointing,
           "static_gb": gigabytes(estimate.static),
           "activation_mb_per_item": round(estimate.activation_per_item / MB, 1),
           "peak_gb": gigabytes(peak), "budget_gb": gigabytes(budget_bytes), "fits": peak <= budget_bytes,
           "chunk": None, "cached_peak_gb": None, "note": ""}
    if row["fits"]:  # no caching needed
        return row
    try:
        chunk = largest_chunk(estimate, job.batch, budget_bytes, job.gpus)
    except MemoryPlanError as exc:
        row["note"] = str(exc)
        return row
    row.update(chunk=chunk, cached_peak_gb=gigabytes(estimate.cached_peak(job.batch, chunk, job.gpus)),
               note=f"gradient caching with chunks of {chunk} keeps the batch of {job.batch}")
    return row


PLAN_COLUMNS = (("dataset", "dataset"), ("model", "model"), ("backbone", "backbone"), ("frames", "frames"),
                ("words", "words"), ("batch", "batch"), ("gpus", "gpus"), ("amp", "amp"),
                ("checkpointing", "ckpt"), ("static_gb", "static GB"), ("activation_mb_per_item", "MB/item"),
                ("peak_gb", "peak GB"), ("fits", "fits"), ("chunk", "chunk"), ("cached_peak_gb", "cached GB"))


def format_plan(rows: list[dict]) -> str:
    """A fixed-width text table of plan rows, notes below it."""
    cells = [[_cell(row.get(key)) for key, _ in PLAN_COLUMNS] for row in rows]
    headers = [title for _, title in PLAN_COLUMNS]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    if rows:
        lines.append(f"budget: {rows[0]['budget_gb']} GB per GPU")
    lines += [f"{row['dataset']}/{row['model']}: {row['note']}" for row in rows if row.get("note")]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def jobs(params) -> list[PlanJob]:
    """Every training job: datasets x compared and ablation models, as trained on compute.train_gpus GPUs."""
    gpus = max(1, params.compute.train_gpus)
    return [PlanJob(dataset, model, job_workload(params, dataset, model), params.train.batch_size, gpus)
            for dataset in params.get("datasets") for model in params.all_models]


def run(params, budget_gb: float | None = None) -> str:
    budget = int((budget_gb if budget_gb is not None else params.compute.gpu_memory_gb) * GB)
    text = format_plan(plan_rows(jobs(params), budget))
    print(text)
    return text
