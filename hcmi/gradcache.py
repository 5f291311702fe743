"""Gradient caching (GradCache; Gao et al., 2021): the exact gradient of a contrastive loss over a whole batch, at
the activation memory of one chunk of it.

A contrastive loss couples every item of the batch with every other one, so splitting the batch into micro-batches
changes the objective (fewer negatives). It couples them only through their representations, though, and those are
small. So the step runs in three passes:

  1. encode the batch chunk by chunk without autograd graphs, keeping only the representations;
  2. compute the loss once on the whole batch, and its gradient with respect to every representation (and to any
     parameter the loss uses directly, such as a learned temperature);
  3. encode each chunk again, this time with its graph, and back-propagate that chunk's slice of the cached gradients.

By the chain rule the parameter gradients equal those of the plain full-batch step. The cost is a second forward
pass of the encoders. Randomness (dropout, random sampling) replays: the RNG state captured before each chunk's first
encoding is restored for its second, and the caller's RNG stream is left where pass 1 and the loss left it.

Engine layer: torch only.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Sequence

import torch

from hcmi.errors import HcmiError

Encode = Callable[..., Any]
LossFn = Callable[..., tuple[torch.Tensor, Any]]


class GradCacheError(HcmiError, ValueError):
    """cached_backward was called with inputs it cannot chunk; the message says which."""


def chunk_bounds(batch: int, chunk_size: int) -> list[tuple[int, int]]:
    """[start, stop) of consecutive chunks of at most chunk_size items covering range(batch)."""
    if chunk_size < 1:
        raise GradCacheError(f"gradient caching: chunk size must be at least 1, got {chunk_size}")
    return [(start, min(start + chunk_size, batch)) for start in range(0, batch, chunk_size)]


def cached_backward(encode: Encode, inputs: Sequence[torch.Tensor], chunk_size: int, loss_fn: LossFn, *,
                    sync_context: Callable[[bool], ContextManager] | None = None,
                    forward_context: Callable[[], ContextManager] | None = None) -> tuple[torch.Tensor, Any]:
    """Accumulate into .grad the parameter gradients of loss_fn(*encode(*inputs)) without holding the graph of more
    than chunk_size items; return the loss and loss_fn's extras, detached.

    encode(*chunk_inputs) -> representations: a tensor, or tuples/lists/dicts of tensors whose first dimension is
        the batch (floating tensors carry gradients; others, such as bool masks, are concatenated and passed along).
    inputs: tensors whose first dimension is the batch; chunks are slices along it (the last one may be shorter).
    loss_fn(*representations) -> (loss, extras), on the whole batch; it may gather across processes itself and may
        close over inputs that are not representations.
    sync_context(is_last_chunk) -> context manager around each chunk's backward (DDP: no_sync() except for the last
        chunk, so gradients are reduced once).
    forward_context() -> context manager around every forward computation (e.g. torch.autocast); backward passes run
        outside it.
    """
    bounds = chunk_bounds(_batch_size(inputs), chunk_size)
    devices = _cuda_devices(inputs)
    rng_states, chunks = [], []
    with torch.no_grad():
        for start, stop in bounds:
            rng_states.append(_rng_state(devices))
            with _entered(forward_context):
                chunks.append(encode(*_slice_inputs(inputs, start, stop)))
    reps = _as_args(_concat(chunks))
    del chunks
    loss, extras, rep_grads, side = _loss_gradients(reps, loss_fn, forward_context)
    del reps
    for i, (start, stop) in enumerate(bounds):
        last = i == len(bounds) - 1
        with sync_context(last) if sync_context is not None else contextlib.nullcontext():
            with torch.random.fork_rng(devices=devices):
                _set_rng_state(rng_states[i], devices)
                with _entered(forward_context):
                    outputs = _leaves(encode(*_slice_inputs(inputs, start, stop)))
            tensors, grads = _chunk_targets(outputs, rep_grads, start, stop)
            if last:  # parameters the loss uses directly get their gradient in the synchronised backward
                tensors, grads = tensors + side[0], grads + side[1]
            if tensors:
                torch.autograd.backward(tensors, grads)
    return loss, extras


def _loss_gradients(reps: tuple, loss_fn: LossFn, forward_context):
    """(loss and extras detached, the gradient of every representation leaf or None, (loss-side leaves, their
    gradients)). The loss's graph is freed on return."""
    leaves = [leaf.detach().requires_grad_(leaf.is_floating_point()) if isinstance(leaf, torch.Tensor) else leaf
              for leaf in _leaves(reps)]
    with torch.enable_grad(), _entered(forward_context):
        loss, extras = loss_fn(*_rebuild(reps, iter(leaves)))
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise GradCacheError("gradient caching: loss_fn must return (a scalar tensor, extras)")
    wanted = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor) and leaf.requires_grad]
    side = _loss_side_leaves(loss, wanted)
    grads = torch.autograd.grad(loss, wanted + side, allow_unused=True) if loss.requires_grad else \
        [None] * (len(wanted) + len(side))
    by_leaf = dict(zip(map(id, wanted), grads[:len(wanted)]))
    rep_grads = [by_leaf.get(id(leaf)) for leaf in leaves]
    side_pairs = [(leaf, grad) for leaf, grad in zip(side, grads[len(wanted):]) if grad is not None]
    return loss.detach(), _detached(extras), rep_grads, ([p for p, _ in side_pairs], [g for _, g in side_pairs])


def _loss_side_leaves(loss: torch.Tensor, reps: list[torch.Tensor]) -> list[torch.Tensor]:
    """Leaf tensors (parameters) reached from the loss's graph other than the representations."""
    skip = {id(rep) for rep in reps}
    found, seen, stack = [], set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad: the leaf it accumulates into
        if variable is not None and id(variable) not in skip:
            found.append(variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def _chunk_targets(outputs: list, rep_grads: list, start: int, stop: int):
    """The chunk's representation tensors that take part in the graph, with their slices of the cached gradients."""
    if len(outputs) != len(rep_grads):
        raise GradCacheError("gradient caching: the second encoding returned another structure than the first")
    tensors, grads = [], []
    for output, grad in zip(outputs, rep_grads):
        if grad is None or not isinstance(output, torch.Tensor) or not output.requires_grad:
            continue
        piece = grad[start:stop]
        if piece.shape != output.shape:
            raise GradCacheError(f"gradient caching: the second encoding of items {start}..{stop - 1} has shape "
                                 f"{tuple(output.shape)}, the first {tuple(piece.shape)}")
        tensors.append(output)
        grads.append(piece.to(output.dtype))
    return tensors, grads


# -- inputs, RNG ---------------------------------------------------------------------------------------------------

def _batch_size(inputs: Sequence[torch.Tensor]) -> int:
    if not inputs:
        raise GradCacheError("gradient caching: no inputs to chunk")
    sizes = {tuple(x.shape[:1]) for x in inputs}
    if len(sizes) != 1 or not next(iter(sizes)):
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        raise GradCacheError(f"gradient caching: every input needs the same first (batch) dimension; got {shapes}")
    return inputs[0].shape[0]


def _slice_inputs(inputs: Sequence[torch.Tensor], start: int, stop: int) -> list[torch.Tensor]:
    return [x[start:stop] for x in inputs]


def _cuda_devices(inputs: Sequence[torch.Tensor]) -> list[int]:
    return sorted({x.device.index or 0 for x in inputs if x.device.type == "cuda"})


def _rng_state(devices: list[int]) -> tuple:
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def _set_rng_state(state: tuple, devices: list[int]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    for device, device_state in zip(devices, cuda):
        torch.cuda.set_rng_state(device_state, device)


def _entered(factory: Callable[[], ContextManager] | None) -> ContextManager:
    return factory() if factory is not None else contextlib.nullcontext()


# -- nested representations (tensors in tuples, lists and dicts) -----------------------------------------------------

def _leaves(tree) -> list:
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    if isinstance(tree, dict):
        return [leaf for key in tree for leaf in _leaves(tree[key])]
    return [tree]


def _rebuild(tree, leaves):
    """The structure of `tree` with its leaves taken in order from the iterator `leaves`."""
    if isinstance(tree, (tuple, list)):
        return type(tree)(_rebuild(item, leaves) for item in tree)
    if isinstance(tree, dict):
        return {key: _rebuild(tree[key], leaves) for key in tree}
    return next(leaves)


def _concat(chunks: list):
    """Chunk outputs of one structure joined along the batch dimension."""
    first = chunks[0]
    if isinstance(first, (tuple, list)):
        return type(first)(_concat([c[i] for c in chunks]) for i in range(len(first)))
    if isinstance(first, dict):
        return {key: _concat([c[key] for c in chunks]) for key in first}
    if isinstance(first, torch.Tensor):
        return torch.cat(chunks) if len(chunks) > 1 else first
    raise GradCacheError(f"gradient caching: encode returned a {type(first).__name__}; expected tensors in "
                         f"tuples, lists or dicts")


def _as_args(reps) -> tuple:
    return tuple(reps) if isinstance(reps, tuple) else (reps,)


def _detached(tree):
    if isinstance(tree, torch.Tensor):
        return tree.detach()
    if isinstance(tree, (tuple, list)):
        return type(tree)(_detached(item) for item in tree)
    if isinstance(tree, dict):
        return {key: _detached(value) for key, value in tree.items()}
    return tree
