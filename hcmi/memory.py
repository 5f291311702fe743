"""Peak GPU memory of one training step, known before a job is queued, and the largest gradient-caching chunk that
fits a memory budget.

What a training step holds on each GPU:
  static       parameters, their gradients and AdamW's two moment estimates (float32: 16 bytes per parameter)
  inputs       the process's share of the batch on the device (uint8 frames, token ids, masks)
  activations  what the forward keeps for the backward plus the backward's working tensors: a batch-independent
               part (bf16 copies of the weights under autocast) and a part per item (items are encoded one by one)
  similarity   the level similarity matrices of the loss and their token-pair tensors, on the global batch:
               quadratic in it

Measured, not guessed: the model is built on PyTorch's meta device (shapes and dtypes, no storage, no arithmetic)
and a training step runs on it, forward and backward, while a dispatch mode follows every storage from its
allocation to its release; the largest sum of live bytes is the step's peak. What CUDA would do differently from
the meta device is replayed: bf16 autocast, by a function mode that applies CUDA autocast's casting rules (matrix
products in bf16; normalisations, softmax, reductions and exponentials in float32; weights cast once per forward),
and attention, by the memory-efficient kernel CUDA runs (the meta device would keep every attention matrix).

The estimate counts tensors, as torch.cuda.max_memory_allocated does; the CUDA context and the caching allocator's
slack come on top, which is why a budget should leave a reserve (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.graph import _engine_run_backward
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from hcmi.errors import HcmiError
from hcmi.model.factory import build_model
from hcmi.model.backbone import Backbone, quiet_open_clip, model_config

GB = 2**30
MB = 2**20
ADAMW_STATES = 2  # exp_avg and exp_avg_sq, each the size of the parameters
# Points where the step is measured (the meta device makes every batch equally cheap). The encoders' peak is linear
# in the items, except that with few items batch-independent tensors (the token-embedding gradient) set it: a line
# through the small points and one through the large points, the larger of the two; the similarity part is
# q*n^2 + l*n, through the large points.
SMALL_ITEMS = (1, 2)
LARGE_ITEMS = (64, 128)


class MemoryPlanError(HcmiError, ValueError):
    """A configuration cannot fit the given memory; the message says which part does not."""


@dataclass(frozen=True)
class Workload:
    """What one training job's step looks like to the memory: a model and the shape of one item."""

    backbone: str
    head: object  # a ModelParams (the merged model section of a variant)
    frames: int
    words: int
    image_size: int
    amp: bool
    checkpointing: bool


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step on one GPU, as functions of the batch (all fields in bytes)."""

    static: int
    input_per_item: int
    activation_per_item: int  # the encoders' graph and backward, per item (batches of LARGE_ITEMS)
    activation_base: int  # ... and its batch-independent part
    few_items_per_item: int  # the same through SMALL_ITEMS, where batch-independent tensors weigh more
    few_items_base: int
    representation_per_item: int
    similarity_per_item: int
    similarity_per_pair: int

    def activations(self, items: int) -> int:
        return max(self.activation_base + self.activation_per_item * items,
                   self.few_items_base + self.few_items_per_item * items)

    def similarity(self, batch: int) -> int:
        return self.similarity_per_item * batch + self.similarity_per_pair * batch * batch

    def peak(self, batch: int, gpus: int = 1) -> int:
        """The plain step: the process's items encoded with graphs, the loss on the global batch."""
        local = local_batch(batch, gpus)
        return self.static + self.input_per_item * local + self.activations(local) + self.similarity(batch)

    def cached_peak(self, batch: int, chunk: int, gpus: int = 1) -> int:
        """The gradient-cached step: the larger of the loss phase (every representation of the global batch, the
        similarity on it) and the re-encoding phase (one chunk's graph beside the cached representation gradients)."""
        local = local_batch(batch, gpus)
        loss_phase = self.representation_per_item * batch + self.similarity(batch)
        encode_phase = self.representation_per_item * local + self.activations(min(chunk, local))
        return self.static + self.input_per_item * local + max(loss_phase, encode_phase)


def local_batch(batch: int, gpus: int) -> int:
    return math.ceil(batch / max(1, gpus))


# -- the plan ----------------------------------------------------------------------------------------------------

def job_workload(params, dataset: str, model: str) -> Workload:
    """The workload of one training job of the configuration (params: the job's parameter view)."""
    data, train = params.dataset(dataset), params.train
    return Workload(backbone=params.backbone_dict(model)["name"], head=params.variant(model), frames=data.max_frames,
                    words=data.max_words, image_size=params.frames.image_size, amp=train.amp,
                    checkpointing=train.grad_checkpointing)


def job_chunk(params, dataset: str, model: str) -> int:
    """The gradient-caching chunk of one training job: train.gradcache_chunk, or with `auto` the largest chunk whose
    step fits compute.gpu_memory_gb on a GPU (0: no caching needed)."""
    setting = params.train.gradcache_chunk
    if setting != "auto":
        return int(setting)
    gpus = max(1, params.compute.train_gpus)
    local = local_batch(params.train.batch_size, gpus)
    budget = int(params.compute.gpu_memory_gb * GB)
    chunk = largest_chunk(estimate_memory(job_workload(params, dataset, model)), params.train.batch_size, budget, gpus)
    return 0 if chunk >= local else chunk


def largest_chunk(estimate: MemoryEstimate, batch: int, budget_bytes: int, gpus: int = 1) -> int:
    """The largest gradient-caching chunk whose step fits budget_bytes per GPU (the process's whole batch when the
    plain step fits); MemoryPlanError when not even one item at a time fits."""
    local = local_batch(batch, gpus)
    if estimate.peak(batch, gpus) <= budget_bytes:
        return local
    fixed = estimate.static + estimate.input_per_item * local
    if fixed > budget_bytes:
        raise MemoryPlanError(
            f"{gigabytes(budget_bytes)} GB is less than the static memory of this model "
            f"({gigabytes(estimate.static)} GB of parameters, gradients and AdamW states) plus the batch's inputs "
            f"({gigabytes(fixed - estimate.static)} GB)")
    if estimate.cached_peak(batch, 1, gpus) > budget_bytes:
        loss_phase = estimate.representation_per_item * batch + estimate.similarity(batch)
        raise MemoryPlanError(
            f"{gigabytes(budget_bytes)} GB does not fit even one item per chunk: the step needs "
            f"{gigabytes(estimate.cached_peak(batch, 1, gpus))} GB (the loss on the batch of {batch} alone "
            f"{gigabytes(loss_phase)} GB, one item's graph {gigabytes(estimate.activations(1))} GB)")
    low, high = 1, local  # cached_peak grows with the chunk: the largest that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if estimate.cached_peak(batch, middle, gpus) <= budget_bytes:
            low = middle
        else:
            high = middle - 1
    return low


def gigabytes(value: int) -> float:
    return round(value / GB, 2)


def workload_key(w: Workload) -> tuple:
    return (w.backbone, repr(w.head), w.frames, w.words, w.image_size, w.amp, w.checkpointing)


# -- measuring -----------------------------------------------------------------------------------------------------

def estimate_memory(workload: Workload) -> MemoryEstimate:
    """Measure a workload's training step on the meta device (seconds, whatever the model's size)."""
    model = meta_model(workload.backbone, workload.head, workload.checkpointing)
    with cuda_attention():
        few_base, few_slope = _line(SMALL_ITEMS, [encoder_step_bytes(model, workload, n) for n in SMALL_ITEMS])
        base, slope = _line(LARGE_ITEMS, [encoder_step_bytes(model, workload, n) for n in LARGE_ITEMS])
        reps = representation_shapes(model, workload)
        (n1, n2), (s1, s2) = LARGE_ITEMS, [similarity_step_bytes(model, reps, n, workload.amp) for n in LARGE_ITEMS]
    per_pair = (s2 * n1 - s1 * n2) // (n1 * n2 * (n2 - n1))  # s(n) = q n^2 + l n through both points
    return MemoryEstimate(
        static=static_bytes(model), input_per_item=input_bytes(workload, 1),
        activation_per_item=slope, activation_base=max(0, base),
        few_items_per_item=few_slope, few_items_base=max(0, few_base),
        representation_per_item=sum(math.prod(shape) * dtype.itemsize for shape, dtype in reps.values()),
        similarity_per_item=max(0, (s1 - per_pair * n1 * n1) // n1), similarity_per_pair=max(0, per_pair),
    )


def _line(points: tuple[int, int], values: list[int]) -> tuple[int, int]:
    """(intercept, slope) of the line through two measured points."""
    (x1, x2), (y1, y2) = points, values
    slope = (y2 - y1) // (x2 - x1)
    return y1 - slope * x1, slope


def meta_model(backbone: str, head, checkpointing: bool) -> torch.nn.Module:
    """The model of a variant on the meta device, in training mode."""
    import open_clip

    model_config(backbone)  # a clear error for an unknown name; registers hcmi's own configs
    with torch.device("meta"), quiet_open_clip():
        model = build_model(head, Backbone(open_clip.create_model(backbone, device="meta"), backbone))
    model.backbone.set_grad_checkpointing(checkpointing)
    return model.train()


def static_bytes(model: torch.nn.Module) -> int:
    """Parameters, gradients and AdamW's moments: four copies of every trainable parameter."""
    params = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return params * (2 + ADAMW_STATES)


def input_bytes(workload: Workload, items: int) -> int:
    frames = items * workload.frames * workload.image_size ** 2 * 3  # uint8 RGB
    return frames + items * workload.frames + items * workload.words * 8  # + frame mask, int64 token ids


def meta_inputs(workload: Workload, items: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    size = workload.image_size
    return (torch.empty(items, workload.frames, size, size, 3, dtype=torch.uint8, device="meta"),
            torch.empty(items, workload.frames, dtype=torch.bool, device="meta"),
            torch.empty(items, workload.words, dtype=torch.long, device="meta"))


def encoder_step_bytes(model, workload: Workload, items: int) -> int:
    """Peak live bytes of encoding `items` items and back-propagating into the parameters (gradients allocated
    beforehand: they belong to the static memory)."""
    _allocate_gradients(model)
    inputs = meta_inputs(workload, items)
    with LiveBytes() as live:
        with _amp(workload.amp):
            video, text = model(*inputs)
        floating = [t for t in (*video.values(), *text.values()) if t.is_floating_point()]
        _backward(floating, [torch.ones_like(t) for t in floating], workload.amp)
        del video, text, floating
    return live.peak


def representation_shapes(model, workload: Workload) -> dict:
    """{(side, key): (shape of one item without the batch dimension, dtype)} of the video and text representations."""
    with torch.no_grad(), _amp(workload.amp):
        video, text = model(*meta_inputs(workload, 1))
    return {(side, key): (tuple(t.shape[1:]), t.dtype)
            for side, rep in (("video", video), ("text", text)) for key, t in rep.items()}


def similarity_step_bytes(model, reps: dict, batch: int, amp: bool) -> int:
    """Peak live bytes of the level similarities of a batch and a contrastive loss on them, forward and backward,
    from representations that are already there (their own bytes are counted as representations)."""
    video, text = {}, {}
    for (side, key), (shape, dtype) in reps.items():
        tensor = torch.empty((batch, *shape), dtype=dtype, device="meta")
        (video if side == "video" else text)[key] = tensor.requires_grad_(dtype.is_floating_point)
    with LiveBytes() as live:
        with _amp(amp):
            sims = model.level_similarities(text, video)
            # the memory of retrieval_loss (which needs values): cross-entropy over rows and columns
            loss = sum(torch.logsumexp(model.logit_scale * s.float(), 0).sum()
                       + torch.logsumexp(model.logit_scale * s.float(), 1).sum() for s in sims.values())
        _backward([loss], [torch.ones_like(loss)], amp)
        del sims, loss
    return live.peak


def _backward(tensors: list, grads: list, amp: bool) -> None:
    """Back-propagate with the autocast replay active, as gradient checkpointing's recomputations need it. The
    engine is called directly: torch.autograd.backward would hand itself to the function mode, which runs it with
    the mode switched off."""
    with _amp(amp, cache=False):
        _engine_run_backward(tuple(tensors), tuple(grads), False, False, (), allow_unreachable=True,
                             accumulate_grad=True)


@contextlib.contextmanager
def cuda_attention():
    """Within this block, scaled dot-product attention runs the memory-efficient kernel that CUDA runs, whose backward
    keeps the log-sum-exp of each query instead of the attention matrix; on the meta device PyTorch would choose the
    plain (math) path and count every attention matrix."""
    plain = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _efficient_attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = plain


def _efficient_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
    if query.dim() != 4 or kwargs.get("enable_gqa"):
        raise MemoryPlanError("memory plan: attention over other than [batch, heads, tokens, dim] is not supported")
    bias = attn_mask
    if bias is not None:
        if bias.dtype == torch.bool:  # True = may attend, as scaled_dot_product_attention reads it
            bias = torch.zeros(bias.shape, dtype=query.dtype, device=query.device).masked_fill(~bias, -math.inf)
        bias = bias.to(query.dtype).expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    out = torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, bias, True, dropout_p, is_causal,
                                                                scale=scale)
    return out[0]


def _allocate_gradients(model) -> None:
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)


def _amp(enabled: bool, cache: bool = True):
    return CudaAutocast(cache=cache) if enabled else _NoMode()


class _NoMode:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class LiveBytes(TorchDispatchMode):
    """Follows the storage of every tensor an operation creates until it is released; `peak` is the largest sum of
    live bytes. Storages that existed before (parameters, inputs) and views or in-place results are not counted."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        existing = {id(t.untyped_storage()) for t in _tensors((args, kwargs))}
        for tensor in _tensors(out):
            storage = tensor.untyped_storage()
            key = id(storage)
            if key in existing or key in self._storages:
                continue
            size = storage.nbytes()
            self.live += size
            self.peak = max(self.peak, self.live)
            self._storages[key] = weakref.ref(storage, self._released(key, size))
        return out

    def _released(self, key: int, size: int):
        def release(_ref):
            self.live -= size
            self._storages.pop(key, None)
        return release


def _tensors(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [t for item in tree for t in _tensors(item)]
    if isinstance(tree, dict):
        return [t for item in tree.values() for t in _tensors(item)]
    return []


# CUDA autocast's rules for the functions these models call (torch.amp documentation, "CUDA Ops that can autocast to
# float16 / float32"); a test checks this replay against real CUDA autocast on fake CUDA tensors
LOWER_PRECISION = (F.linear, torch.conv1d, torch.conv2d, torch.conv3d, torch.matmul, torch.Tensor.matmul,
                   torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm, torch.bmm, torch.Tensor.bmm, torch.baddbmm,
                   torch.Tensor.baddbmm, torch.addmm, torch.Tensor.addmm, torch.addbmm, torch.mv, torch.einsum,
                   F.scaled_dot_product_attention, F.multi_head_attention_forward)
FLOAT32 = (F.layer_norm, torch.layer_norm, F.group_norm, F.normalize, torch.norm, torch.Tensor.norm,
           torch.linalg.vector_norm, torch.softmax, torch.Tensor.softmax, F.softmax, torch.log_softmax,
           torch.Tensor.log_softmax, F.log_softmax, torch.logsumexp, torch.Tensor.logsumexp, torch.sum,
           torch.Tensor.sum, torch.exp, torch.Tensor.exp, torch.log, torch.Tensor.log, torch.pow, torch.Tensor.pow,
           torch.Tensor.__pow__, torch.cumsum, torch.Tensor.cumsum, torch.prod, torch.Tensor.prod, torch.rsqrt,
           torch.Tensor.rsqrt, F.cross_entropy, F.nll_loss, F.mse_loss, F.cosine_similarity, F.softplus)


class CudaAutocast(TorchFunctionMode):
    """bf16 autocast as CUDA applies it, on any device (the meta device has no autocast of its own): float32
    arguments of matrix products are cast to bf16, bf16 arguments of precision-sensitive functions to float32, and
    a trainable weight is cast once per forward (autocast's weight cache; cache=False for the recomputations of
    gradient checkpointing during backward, whose autocast contexts each start with an empty cache)."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16, cache: bool = True):
        super().__init__()
        self.dtype, self.cache = dtype, cache
        self._weights: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in LOWER_PRECISION:
            args, kwargs = self._cast((args, kwargs), torch.float32, self.dtype)
        elif func in FLOAT32:
            args, kwargs = self._cast((args, kwargs), self.dtype, torch.float32)
        return func(*args, **kwargs)

    def __exit__(self, *exc):
        self._weights.clear()
        return super().__exit__(*exc)

    def _cast(self, tree, source: torch.dtype, target: torch.dtype):
        if isinstance(tree, torch.Tensor):
            if tree.dtype != source:
                return tree
            if self.cache and tree.is_leaf and tree.requires_grad:
                cached = self._weights.get(id(tree))
                if cached is None:
                    cached = self._weights[id(tree)] = (tree, tree.to(target))
                return cached[1]
            return tree.to(target)
        if isinstance(tree, (tuple, list)):
            return type(tree)(self._cast(item, source, target) for item in tree)
        if isinstance(tree, dict):
            return {key: self._cast(value, source, target) for key, value in tree.items()}
        return tree
