"""Gradient caching gives the loss and every parameter gradient of the plain full-batch step (one process and 2-process
DDP), replays randomness between its two encodings, and works with gradient checkpointing.

Run as a script under torchrun, this file is the DDP worker of test_ddp_cached_gradients_equal_the_global_batch."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hcmi.gradcache import GradCacheError, cached_backward, chunk_bounds
from hcmi.losses import retrieval_loss
from hcmi.model import create_backbone
from hcmi.model.factory import build_model
from hcmi.model.backbone import tokenizer

from conftest import REPO, tiny_params_dict, tiny_params_from

TEXTS = ["a red circle moves left, then a blue square grows", "first a green triangle sinks",
         "a purple disk shrinks before a yellow rhombus rises", "the blue diamond expands after a red square moves up",
         "a white box goes right", "two circles swap places and then one of them shrinks"]
BATCH, FRAMES, PROGRESS = 6, 4, 1.0
BF16_UNIT_ROUNDOFF = 2.0**-8  # bf16 keeps 8 significant bits: round-to-nearest errs by at most 2^-8 relative
DDP_TIMEOUT_S = 300


def tiny_model(seed: int = 0, checkpointing: bool = False):
    """The real HCMI head on the tiny backbone, in float64 (so that only the order of operations can differ)."""
    params = tiny_params_from(tiny_params_dict())
    torch.manual_seed(seed)
    backbone = create_backbone(params.backbone.name)
    backbone.set_grad_checkpointing(checkpointing)
    objective = params.variant("hcmi")
    assert objective.denoise.method != "none" and objective.enhance.method != "none"
    return build_model(objective, backbone).double(), objective


def tiny_batch(n: int = BATCH, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (n, FRAMES, 24, 24, 3), dtype=torch.uint8, generator=g)
    mask = torch.ones(n, FRAMES, dtype=torch.bool)
    mask[1, 3:], mask[4, 2:] = False, False
    frames[n - 1] = frames[0]  # a copy of the first video: a latent positive for two-view denoising to find
    tokens = tokenizer("hcmi-tiny", 32)((TEXTS * n)[:n])
    return frames, mask, tokens


def second_view(model, batch):
    """The second, gradient-free view of two-view denoising: the same videos with a little pixel noise."""
    frames, mask, _ = batch
    noise = torch.randint(-3, 4, frames.shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return model.encode_video((frames.int() + noise).clamp(0, 255).to(torch.uint8), mask)


def contrastive_loss(model, objective, second=None, gather=lambda rep: rep):
    """The training objective as a loss_fn of the representations; the second view is closed over, as training
    does (it carries no gradient)."""
    def loss_fn(video, text):
        video, text = gather(video), gather(text)
        sims = model.level_similarities(text, video)
        result = retrieval_loss(sims, model.level_weights(), model.logit_scale, text=text, video=video,
                                second_view=gather(second) if second is not None else None, objective=objective,
                                progress=PROGRESS)
        return result.total, result.parts
    return loss_fn


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def plain_step(model, objective, batch):
    model.zero_grad(set_to_none=True)
    loss, parts = contrastive_loss(model, objective, second_view(model, batch))(*model(*batch))
    loss.backward()
    return loss.detach(), parts, gradients(model)


def assert_same_gradients(got: dict, expected: dict, rtol=1e-6, atol=1e-9):
    assert set(got) == set(expected), set(got) ^ set(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("chunk_size", [2, 4])  # 4 does not divide the batch of 6
def test_cached_loss_and_every_gradient_equal_the_full_batch(chunk_size):
    model, objective = tiny_model()
    batch = tiny_batch()
    loss, parts, expected = plain_step(model, objective, batch)
    assert len(expected) == len(list(model.parameters()))
    assert expected["backbone.clip.logit_scale"].abs() > 0, "the temperature is a loss-side parameter"

    model.zero_grad(set_to_none=True)
    cached_loss, cached_parts = cached_backward(model, batch, chunk_size,
                                                contrastive_loss(model, objective, second_view(model, batch)))
    torch.testing.assert_close(cached_loss, loss, rtol=1e-9, atol=0)
    assert set(cached_parts) == set(parts) == set(model.levels) | {"triplet"}
    for level, part in parts.items():
        assert not cached_parts[level].requires_grad
        torch.testing.assert_close(cached_parts[level], part.detach(), rtol=1e-9, atol=0)
    assert_same_gradients(gradients(model), expected)


def test_denoising_and_enhancement_are_active_in_the_compared_objective():
    """Guards the test above: with this batch, both refinements change the loss (so their gradients were compared)."""
    def without(section: str):  # the objective with one of its sections switched off
        off = getattr(objective, section).model_copy(update={"method": "none"})
        return objective.model_copy(update={section: off})

    model, objective = tiny_model()
    batch = tiny_batch()
    second = second_view(model, batch)
    with torch.no_grad():
        video, text = model(*batch)
        full = contrastive_loss(model, objective, second)(video, text)[0]
        no_denoise = contrastive_loss(model, without("denoise"), second)
        no_enhance = contrastive_loss(model, without("enhance"), second)
        assert abs(float(no_denoise(video, text)[0] - full)) > 1e-6
        assert abs(float(no_enhance(video, text)[0] - full)) > 1e-6


def test_gradient_checkpointing_gives_the_same_cached_gradients():
    model, objective = tiny_model(seed=1)
    batch = tiny_batch(seed=1)
    _, _, expected = plain_step(model, objective, batch)
    checkpointed, _ = tiny_model(seed=1, checkpointing=True)
    cached_backward(checkpointed, batch, 4, contrastive_loss(checkpointed, objective, second_view(model, batch)))
    assert_same_gradients(gradients(checkpointed), expected)


def test_bf16_autocast_runs_around_both_encodings_and_the_loss():
    """With one chunk of the whole batch, a cached step under bf16 autocast is bit for bit the plain autocast step
    (every forward ran under autocast, both encodings alike); smaller chunks change only the order of bf16 roundings,
    so the loss and the whole gradient differ from the plain step's by less than one bf16 unit roundoff (2^-8) of their
    size. (Per tensor there is no such bound: a gradient that is a sum of terms cancelling to almost nothing, such as a
    layer norm's bias, carries the rounding of its terms, not of its small size. A step that left either encoding in
    float32 differs from the bf16 step by bf16's whole error, several per cent here.)"""
    params = tiny_params_from(tiny_params_dict())
    torch.manual_seed(0)
    objective = params.variant("hcmi")
    model = build_model(objective, create_backbone(params.backbone.name))
    batch = tiny_batch()
    second = second_view(model, batch)
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    dtypes = {}

    def loss_fn(video, text):
        dtypes.update({key: value.dtype for key, value in video.items()})
        return contrastive_loss(model, objective, second)(video, text)

    with autocast():
        loss, _ = loss_fn(*model(*batch))
    loss.backward()
    expected = gradients(model)
    assert dtypes["frame"] == torch.bfloat16
    for chunk_size, rtol in ((BATCH, 0.0), (4, BF16_UNIT_ROUNDOFF)):
        model.zero_grad(set_to_none=True)
        dtypes.clear()
        cached_loss, _ = cached_backward(model, batch, chunk_size, loss_fn, forward_context=autocast)
        assert dtypes["frame"] == torch.bfloat16
        torch.testing.assert_close(cached_loss, loss.detach(), rtol=rtol, atol=0)
        got = gradients(model)
        assert set(got) == set(expected)
        assert all(torch.isfinite(grad).all() for grad in got.values())
        if rtol == 0:
            assert_same_gradients(got, expected, rtol=0, atol=0)
        difference = torch.cat([(got[name] - grad).flatten() for name, grad in expected.items()]).norm()
        size = torch.cat([grad.flatten() for grad in expected.values()]).norm()
        assert difference <= rtol * size, (chunk_size, float(difference / size))


def test_randomness_inside_encode_is_replayed_for_the_second_encoding():
    model, objective = tiny_model()
    batch = tiny_batch()
    views = second_view(model, batch)

    def noisy_encode(frames, mask, tokens):  # dropout on every floating representation
        video, text = model(frames, mask, tokens)
        drop = {k: F.dropout(v, 0.3, training=True) if v.is_floating_point() else v for k, v in video.items()}
        return drop, {k: F.dropout(v, 0.3, training=True) if v.is_floating_point() else v for k, v in text.items()}

    def reference(chunk_size):
        """The same chunks encoded once, with graphs, in the same order: the randomness cached_backward must see."""
        model.zero_grad(set_to_none=True)
        parts = [noisy_encode(*(x[a:b] for x in batch)) for a, b in chunk_bounds(BATCH, chunk_size)]
        video, text = ({k: torch.cat([p[i][k] for p in parts]) for k in parts[0][i]} for i in (0, 1))
        loss, _ = contrastive_loss(model, objective, views)(video, text)
        loss.backward()
        return loss.detach(), gradients(model)

    torch.manual_seed(7)
    with torch.no_grad():
        first, second = noisy_encode(*batch)[0]["video"], noisy_encode(*batch)[0]["video"]
    assert not torch.equal(first, second), "the encoder must be random for this test to mean anything"

    torch.manual_seed(7)
    loss, expected = reference(4)
    after_reference = torch.rand(3)
    torch.manual_seed(7)
    model.zero_grad(set_to_none=True)
    cached_loss, _ = cached_backward(noisy_encode, batch, 4, contrastive_loss(model, objective, views))
    torch.testing.assert_close(cached_loss, loss, rtol=1e-9, atol=0)
    assert_same_gradients(gradients(model), expected)
    assert torch.equal(torch.rand(3), after_reference), "the caller's RNG stream continues as without caching"


def test_sync_context_wraps_every_chunk_and_only_the_last_synchronises():
    model, objective = tiny_model()
    calls = []

    def sync_context(last):
        calls.append(last)
        return contextlib.nullcontext()

    batch = tiny_batch()
    cached_backward(model, batch, 4, contrastive_loss(model, objective, second_view(model, batch)),
                    sync_context=sync_context)
    assert calls == [False, True]


def test_bad_chunking_is_a_clear_error():
    frames, mask, tokens = tiny_batch()
    with pytest.raises(GradCacheError, match="chunk size must be at least 1"):
        cached_backward(lambda *x: x, (frames,), 0, lambda *r: (r[0].sum(), {}))
    with pytest.raises(GradCacheError, match="same first"):
        cached_backward(lambda *x: x, (frames, tokens[:3]), 2, lambda *r: (r[0].sum(), {}))
    assert chunk_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]


# -- 2-process DDP (gloo) --------------------------------------------------------------------------------------------

def test_ddp_cached_gradients_equal_the_global_batch(tmp_path):
    """Each of 2 processes holds half of the global batch; embeddings are gathered inside the loss as in training;
    DDP's averaged gradients must equal one process's full-batch gradients of the global batch."""
    out = tmp_path / "ddp_grads.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(Path(__file__).resolve()), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=DDP_TIMEOUT_S, cwd=REPO)
    assert result.returncode == 0, result.stderr[-5000:]

    model, objective = tiny_model()
    loss, _, expected = plain_step(model, objective, tiny_batch())
    got = torch.load(out, weights_only=True)
    torch.testing.assert_close(got["loss"], loss, rtol=1e-9, atol=0)
    assert_same_gradients(got["grads"], expected)


def ddp_worker(out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from hcmi.distributed import setup

    torch.set_num_threads(1)
    group = setup()
    assert group.world_size == 2
    model, objective = tiny_model()
    ddp = DistributedDataParallel(model)
    per_rank = BATCH // group.world_size
    mine = slice(group.rank * per_rank, (group.rank + 1) * per_rank)
    batch = tiny_batch()
    local = [x[mine] for x in batch]
    second = {key: value[mine] for key, value in second_view(model, batch).items()}  # this rank's videos' views
    loss, _ = cached_backward(ddp, local, 2, contrastive_loss(model, objective, second, group.gather),  # 2 of 3 items
                              sync_context=lambda last: contextlib.nullcontext() if last else ddp.no_sync())
    if group.is_main:
        torch.save({"loss": loss, "grads": gradients(model)}, out)
    dist.barrier()
    group.shutdown()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ddp_worker(sys.argv[1])
