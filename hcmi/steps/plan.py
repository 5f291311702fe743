"""`hcmi plan`: before queuing, the estimated peak GPU memory of every training job of the configuration, and the
gradient-caching chunk each will use (train.gradcache_chunk; `auto` picks the largest that fits
compute.gpu_memory_gb). docs/scaling.md explains how the estimate is made and how to read it."""

from __future__ import annotations

from hcmi.memory import GB, PlanJob, Workload, format_plan, largest_chunk, estimate_memory, plan_rows


def workload(params, dataset: str, model: str) -> Workload:
    data, train = params.dataset(dataset), params.train
    return Workload(backbone=params.backbone_dict(model)["name"], head=params.variant(model), frames=data.max_frames,
                    words=data.max_words, image_size=params.frames.image_size, amp=train.amp,
                    checkpointing=train.grad_checkpointing)


def jobs(params) -> list[PlanJob]:
    """Every training job: datasets x compared and ablation models, as trained on compute.train_gpus GPUs."""
    gpus = max(1, params.compute.train_gpus)
    return [PlanJob(dataset, model, workload(params, dataset, model), params.train.batch_size, gpus)
            for dataset in params.get("datasets") for model in params.all_models]


def chunk_size(params, dataset: str, model: str) -> int:
    """The gradient-caching chunk of one training job: train.gradcache_chunk, or with `auto` the largest chunk whose
    step fits compute.gpu_memory_gb on a GPU (0: no caching needed, or no GPU to plan for)."""
    setting = params.train.gradcache_chunk
    if setting != "auto":
        return int(setting)
    gpus = max(1, params.compute.train_gpus)
    local = -(-params.train.batch_size // gpus)
    budget = int(params.compute.gpu_memory_gb * GB)
    chunk = largest_chunk(estimate_memory(workload(params, dataset, model)), params.train.batch_size, budget, gpus)
    return 0 if chunk >= local else chunk


def run(params, budget_gb: float | None = None) -> str:
    budget = int((budget_gb if budget_gb is not None else params.compute.gpu_memory_gb) * GB)
    text = format_plan(plan_rows(jobs(params), budget))
    print(text)
    return text
