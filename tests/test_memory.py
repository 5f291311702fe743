"""The memory plan: estimates measured on the meta device agree with real allocations, scale with the batch as the
step does, and choose the largest gradient-caching chunk that fits a budget."""

import contextlib
from functools import lru_cache

import pytest
import torch


from hcmi.losses import retrieval_loss
from hcmi.memory import (MB, CudaAutocast, LiveBytes, MemoryPlanError, Workload, cuda_attention,
                         encoder_step_bytes, estimate_memory, largest_chunk, meta_model)
from hcmi.steps.plan import PlanJob, format_plan, plan_rows
from hcmi.model import create_backbone
from hcmi.model.factory import build_model

from conftest import tiny_params_dict, tiny_params_from

FRAMES, WORDS = 4, 32


def tiny_workload(amp=False, checkpointing=False, backbone="hcmi-tiny", image_size=24, frames=FRAMES) -> Workload:
    head = tiny_params_from(tiny_params_dict()).variant("hcmi")
    return Workload(backbone, head, frames, WORDS, image_size, amp, checkpointing)


@lru_cache(maxsize=None)
def tiny_estimate(amp=False, checkpointing=False):
    return estimate_memory(tiny_workload(amp, checkpointing))


def test_estimate_grows_linearly_with_the_batch():
    estimate = tiny_estimate()
    encoder = [estimate.peak(b) - estimate.similarity(b) for b in (256, 512, 768)]
    assert encoder[2] - encoder[1] == encoder[1] - encoder[0] > 0
    similarity = [estimate.similarity(b) for b in (256, 512, 768)]
    assert similarity[2] - 2 * similarity[1] + similarity[0] == 2 * estimate.similarity_per_pair * 256 ** 2 > 0
    # the linear model agrees with a direct measurement at batches it was not fitted on
    workload = tiny_workload()
    model = meta_model(workload.backbone, workload.head, workload.checkpointing)
    with cuda_attention():
        for items in (5, 40, 300):
            measured = encoder_step_bytes(model, workload, items)
            assert abs(measured - estimate.activations(items)) <= 0.02 * measured, items


def test_gradient_checkpointing_lowers_the_activations_per_item():
    for amp in (False, True):
        plain, checkpointed = tiny_estimate(amp, False), tiny_estimate(amp, True)
        assert checkpointed.activation_per_item < 0.5 * plain.activation_per_item
        assert checkpointed.static == plain.static


def test_bf16_autocast_lowers_the_activations_of_a_clip_backbone():
    fp32 = estimate_memory(tiny_workload(backbone="ViT-B-32", image_size=224, frames=2))
    bf16 = estimate_memory(tiny_workload(amp=True, backbone="ViT-B-32", image_size=224, frames=2))
    assert bf16.activation_per_item < 0.75 * fp32.activation_per_item
    assert bf16.static == fp32.static > 500 * MB  # ~150 M float32 parameters, 4 copies


def test_the_chosen_chunk_fits_and_the_next_larger_does_not():
    estimate, batch = tiny_estimate(), 256
    for fraction in (0.2, 0.5, 0.8):
        low, high = estimate.cached_peak(batch, 1), estimate.cached_peak(batch, batch // 2)
        budget = int(low + fraction * (high - low))
        chunk = largest_chunk(estimate, batch, budget)
        assert 1 <= chunk < batch
        assert estimate.cached_peak(batch, chunk) <= budget < estimate.cached_peak(batch, chunk + 1)
    assert largest_chunk(estimate, batch, estimate.peak(batch)) == batch  # the plain step fits: no caching
    # two GPUs: each encodes half of the batch
    assert largest_chunk(estimate, batch, estimate.peak(batch, gpus=2), gpus=2) == batch // 2


def test_a_budget_below_the_static_memory_is_a_clear_error():
    estimate = tiny_estimate()
    with pytest.raises(MemoryPlanError, match="less than the static memory"):
        largest_chunk(estimate, 32, estimate.static - 1)
    with pytest.raises(MemoryPlanError, match="does not fit even one item per chunk"):
        largest_chunk(estimate, 32, estimate.cached_peak(32, 1) - 1)


def test_meta_estimate_matches_the_real_allocations_of_a_cpu_step():
    """The same step on real CPU tensors, every allocation followed: the meta replay counts the same bytes."""
    params = tiny_params_from(tiny_params_dict())
    objective = params.variant("hcmi")
    estimate = tiny_estimate()
    torch.manual_seed(0)
    model = build_model(objective, create_backbone("hcmi-tiny"))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    for items in (2, 8):
        frames = torch.randint(0, 256, (items, FRAMES, 24, 24, 3), dtype=torch.uint8)
        mask, tokens = torch.ones(items, FRAMES, dtype=torch.bool), torch.randint(1, 1000, (items, WORDS))
        with torch.no_grad():
            second = model.encode_video(frames, mask)  # the gradient-free second view (its memory is freed)
        with LiveBytes() as live:
            video, text = model(frames, mask, tokens)
            loss = retrieval_loss(model.level_similarities(text, video), model.level_weights(), model.logit_scale,
                                  text=text, video=video, second_view=second, objective=objective, progress=0.5).total
            loss.backward()
            del video, text, loss
        predicted = estimate.activations(items) + estimate.similarity(items)
        assert abs(predicted - live.peak) <= 0.05 * live.peak, (items, predicted, live.peak)


def test_autocast_replay_matches_cuda_autocast():
    """The forward's live bytes under the replayed rules equal those under CUDA's own autocast, run on fake CUDA
    tensors (no GPU needed; attention takes the same plain path in both, so only the casting rules are compared).
    On ViT-B-32 the two differ by 0.4%; without the float32 rules by 3%, without the bf16 rules by 30%."""
    fake_tensor = pytest.importorskip("torch._subclasses.fake_tensor")
    workload = tiny_workload(amp=True, backbone="ViT-B-32", image_size=224)
    model = meta_model(workload.backbone, workload.head, False)
    replayed = forward_bytes(model, workload, "meta", CudaAutocast)
    with fake_tensor.FakeTensorMode(allow_non_fake_inputs=True):
        move_to(model, "cuda")
        exact = forward_bytes(model, workload, "cuda", cuda_autocast)
    assert abs(replayed - exact) <= 0.01 * exact, (replayed, exact)


def test_plan_rows_and_table_for_the_configured_jobs():
    from hcmi.steps.plan import jobs as plan_jobs

    raw = tiny_params_dict()
    raw["train"].update(amp=True, grad_checkpointing=True, batch_size=64)
    params = tiny_params_from(raw)
    jobs = plan_jobs(params)
    assert [(j.dataset, j.model) for j in jobs] == [("synthetic", m) for m in params.all_models]
    assert all(j.workload.amp and j.workload.checkpointing and j.batch == 64 for j in jobs)
    estimate = tiny_estimate(True, True)
    budget = (estimate.cached_peak(64, 1) + estimate.cached_peak(64, 32)) // 2
    rows = plan_rows([job for job in jobs if job.model == "hcmi"], budget)
    assert len(rows) == 1 and not rows[0]["fits"] and 1 <= rows[0]["chunk"] < 64
    assert rows[0]["cached_peak_gb"] <= rows[0]["budget_gb"] + 0.01
    assert "gradient caching with chunks of" in rows[0]["note"]
    roomy = plan_rows([job for job in jobs if job.model == "hcmi"], estimate.peak(64))
    assert roomy[0]["fits"] and roomy[0]["chunk"] is None and roomy[0]["note"] == ""
    impossible = plan_rows([PlanJob("synthetic", "hcmi", jobs[1].workload, 64)], estimate.static // 2)
    assert impossible[0]["chunk"] is None and "static memory" in impossible[0]["note"]
    table = format_plan(rows + impossible)
    assert table.splitlines()[0].split()[:3] == ["dataset", "model", "backbone"]
    assert "synthetic/hcmi: 0." in table and f"{rows[0]['chunk']}" in table


# -- helpers: the same forward on fake CUDA tensors under CUDA's own autocast ------------------------------------------

def move_to(model, device):
    """Replace every parameter and buffer by an empty tensor of the same shape on `device` (fake tensors here)."""
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = torch.nn.Parameter(
                    torch.empty_strided(p.shape, p.stride(), dtype=p.dtype, device=device), p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = torch.empty_strided(b.shape, b.stride(), dtype=b.dtype, device=device)


@contextlib.contextmanager
def cuda_autocast():
    """torch.autocast('cuda') refuses to start without a GPU; these are the calls it makes."""
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", torch.bfloat16)
    torch.autocast_increment_nesting()
    try:
        yield
    finally:
        torch.autocast_decrement_nesting()
        torch.clear_autocast_cache()
        torch.set_autocast_enabled("cuda", False)


def forward_bytes(model, workload, device, autocast) -> int:
    size, items = workload.image_size, 2
    inputs = (torch.empty(items, workload.frames, size, size, 3, dtype=torch.uint8, device=device),
              torch.ones(items, workload.frames, dtype=torch.bool, device=device),
              torch.ones(items, workload.words, dtype=torch.long, device=device))
    with LiveBytes() as live, autocast():
        video, text = model(*inputs)
        model.level_similarities(text, video)
    return live.peak
