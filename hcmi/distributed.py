"""Multi-process training under torchrun (DDP): process group set-up and cross-rank gathering of embeddings.

A single process is just world size 1: every helper here is then a no-op, so the training loop has one code path.
The contrastive loss needs negatives from the whole global batch, so each rank gathers every rank's embeddings with
a gather whose backward sums gradients back to their owners; every rank then computes the same global loss, and
DDP's gradient averaging turns those sums into exactly the single-process gradient of the global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, rep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every rank's tensors concatenated in rank order along dim 0 (differentiable)."""
        if not self.enabled:
            return rep
        from torch.distributed.nn.functional import all_gather

        out = {}
        for key, value in rep.items():
            if value.is_floating_point():
                out[key] = torch.cat(all_gather(value.contiguous()), dim=0)
            else:  # masks: no gradient, a plain gather
                parts = [torch.empty_like(value) for _ in range(self.world_size)]
                dist.all_gather(parts, value.contiguous())
                out[key] = torch.cat(parts, dim=0)
        return out

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup() -> Distributed:
    """Join the process group when started by torchrun (NCCL on CUDA, gloo on CPU); a single process otherwise."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Distributed()
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Distributed(rank=rank, world_size=world, local_rank=local)
