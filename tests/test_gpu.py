"""The CUDA paths: blocked evaluation on the GPU equals the CPU result, and a bf16-autocast training step of both heads
(two-view denoising included) gives finite gradients and the loss of a float32 step. The CUDA cases are skipped where
no CUDA device is visible (CI, this project's CPU machines); `bash bench/gpu_check.sh run` runs them on a GPU machine.
The training step runs on the CPU too, so that the code path the GPU runs is exercised by every test run."""

import pytest
import torch

from hcmi.scoring import level_similarity_matrices
from hcmi.losses import retrieval_loss

from conftest import tiny_params_dict, tiny_params_from
from test_model import TEXTS, batch, make

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


def representations(nt, nv, words, frames, dim, seed=0):
    g = torch.Generator().manual_seed(seed)

    def tokens(n, length):
        x = torch.nn.functional.normalize(torch.randn(n, length, dim, generator=g), dim=-1)
        valid = torch.randint(1, length + 1, (n,), generator=g)
        mask = torch.zeros(n, length, dtype=torch.bool)
        for i, v in enumerate(valid.tolist()):  # valid tokens not only at the front: packing must follow the mask
            mask[i, torch.randperm(length, generator=g)[:v]] = True
        return x, mask

    unit = lambda n: torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)  # noqa: E731
    words_, word_mask = tokens(nt, words)
    phrases, phrase_mask = tokens(nt, 4)
    frames_, frame_mask = tokens(nv, frames)
    clips, clip_mask = tokens(nv, 4)
    text = {"sentence": unit(nt), "phrase": phrases, "phrase_mask": phrase_mask, "word": words_,
            "word_mask": word_mask}
    video = {"video": unit(nv), "clip": clips, "clip_mask": clip_mask, "frame": frames_, "frame_mask": frame_mask}
    return text, video


@needs_cuda
@pytest.mark.parametrize("memory_mb", [0.05, 1.0, 64.0])
def test_blocked_evaluation_on_gpu_equals_cpu(memory_mb):
    model, _ = make("hcmi")
    text, video = representations(70, 53, words=32, frames=12, dim=64)
    on_cpu = level_similarity_matrices(model, text, video, memory_mb)
    on_gpu = level_similarity_matrices(model, text, video, memory_mb, torch.device("cuda"))
    assert set(on_gpu) == set(model.levels)
    for level in model.levels:
        torch.testing.assert_close(torch.from_numpy(on_gpu[level]), torch.from_numpy(on_cpu[level]),
                                   rtol=0, atol=1e-5, msg=level)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["baseline", "hcmi"])
def test_bf16_autocast_step_matches_float32(variant, device):
    model, tok = make(variant)
    model = model.to(device)
    objective = tiny_params_from(tiny_params_dict()).variant(variant)
    assert objective.two_views == (variant == "hcmi"), "the HCMI case covers two-view denoising"
    frames, mask = (x.to(device) for x in batch())
    tokens = tok(TEXTS).to(device)

    def loss_and_grads(autocast: bool):
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            video, text = model(frames, mask, tokens)
            with torch.no_grad():  # the second view as the trainer makes it: the whole representation, frame tokens too
                second = model.encode_video(frames.flip(1), mask) if objective.two_views else None
            sims = model.level_similarities(text, video)
            loss = retrieval_loss(sims, model.level_weights(), model.logit_scale, text=text, video=video,
                                  second_view=second, objective=objective, progress=0.5).total
        loss.backward()
        grads = [p.grad.detach().float().clone() for p in model.parameters() if p.grad is not None]
        return loss.detach().float(), grads

    full, full_grads = loss_and_grads(False)
    mixed, mixed_grads = loss_and_grads(True)
    assert torch.isfinite(mixed) and all(torch.isfinite(g).all() for g in mixed_grads)
    assert len(mixed_grads) == len(full_grads) > 0
    torch.testing.assert_close(mixed, full, rtol=5e-2, atol=5e-2)
