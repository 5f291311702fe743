"""Aggregation layers: N tokens -> K tokens (frames -> clips -> video, words -> phrases -> sentence).

`attention` (the default, as the authors describe their aggregation layer): tokens with similar meaning are merged
through self-attention, then a feed-forward layer transforms them. Here one self-attention layer lets similar tokens
exchange information, K learned queries then attend over the tokens (each output a softmax-weighted average of the
tokens that match its query: a soft cluster, in the tokens' own space), and a feed-forward layer transforms the K
outputs (pre-norm, residual). The same layer
with K = 1 turns clips into the video token and phrases into the sentence token. docs/method.md gives the reasoning.

The clustering alternatives (params `model.aggregation`) choose centres from the tokens' mutual similarity, without
gradients:
  density_peak  density-peak clustering with k nearest neighbours (DPC-kNN): a token is a centre when it is dense
                (close to its neighbours) and far from every denser token; K highest density x distance scores win
  kmedoids      k-medoids refined from the density-peak centres (a few alternating assign/update rounds)
  uniform       K contiguous, equally long segments in token order (the non-adaptive ablation)
Every valid token joins its nearest centre; a cluster token is the attention-weighted mean of its members, with
weights from a learned score, so gradients flow into the tokens and into the scoring; their top token (video,
sentence) is an attention pool. Padding never takes part in any of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLUSTERING = ("density_peak", "kmedoids", "uniform")
METHODS = ("attention",) + CLUSTERING
KMEDOIDS_ROUNDS = 3
FAR = 1e4  # distance given to padding, larger than any cosine distance (<= 2)


def cosine_distances(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, N, N] cosine distances; pairs involving padding are FAR."""
    xn = F.normalize(x.float(), dim=-1)
    dist = (1.0 - xn @ xn.transpose(1, 2)).clamp(min=0.0)
    pair_valid = mask[:, :, None] & mask[:, None, :]
    return dist.masked_fill(~pair_valid, FAR)


def density_peak_centres(dist: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [B, k] of the k density-peak centres (padding is chosen only when fewer than k tokens are valid).

    Density is exp(-mean squared distance to the ceil(sqrt(n)) nearest neighbours), n = that item's valid tokens,
    so neither the amount of padding nor the padded length changes the result."""
    b, n, _ = dist.shape
    valid = mask.sum(-1, keepdim=True)  # [B, 1]
    neighbours = torch.ceil(torch.sqrt(valid.float())).long().clamp(min=1)
    neighbours = torch.minimum(neighbours, (valid - 1).clamp(min=1))
    eye = torch.eye(n, dtype=torch.bool, device=dist.device)
    near = dist.masked_fill(eye, FAR).sort(dim=-1).values[:, :, : max(1, n - 1)]  # nearest first, self excluded
    take = torch.arange(near.shape[-1], device=dist.device)[None, None, :] < neighbours[:, :, None]
    near_sq = (near.clamp(max=2.0) ** 2) * take
    density = torch.exp(-near_sq.sum(-1) / neighbours.float())
    # deterministic tie-break by position alone: earlier tokens are (infinitesimally) denser
    density = density - 1e-9 * torch.arange(n, device=dist.device)
    density = density.masked_fill(~mask, -1.0)
    denser = density[:, None, :] > density[:, :, None]  # [B, i, j]: j is denser than i
    delta = dist.masked_fill(~denser, FAR).min(-1).values
    valid_dist = dist.masked_fill(dist >= FAR, 0.0).amax(-1)
    delta = torch.where(delta >= FAR, valid_dist, delta)  # the densest token: its largest distance
    score = (density * delta).masked_fill(~mask, -FAR)
    return score.topk(min(k, n), dim=-1).indices


def kmedoids_centres(dist: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    centres = density_peak_centres(dist, mask, k)
    for _ in range(KMEDOIDS_ROUNDS):
        assign = assign_to_centres(dist, mask, centres)
        member = F.one_hot(assign.clamp(min=0), centres.shape[1]).bool() & mask[:, :, None]  # [B, N, K]
        # cost of token i as the medoid of cluster c: sum of distances from i to c's members
        cost = torch.einsum("bij,bjk->bik", dist.masked_fill(dist >= FAR, 0.0), member.float())
        cost = cost.masked_fill(~member, float("inf"))  # a medoid must belong to its cluster
        best = cost.argmin(dim=1)  # [B, K]
        empty = ~member.any(dim=1)
        centres = torch.where(empty, centres, best)
    return centres


def uniform_assignment(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Contiguous segments: valid token number r of n goes to cluster floor(r * k / n)."""
    rank = mask.long().cumsum(-1) - 1
    count = mask.long().sum(-1, keepdim=True).clamp(min=1)
    assign = (rank * k) // count
    return assign.masked_fill(~mask, -1)


def assign_to_centres(dist: torch.Tensor, mask: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """[B, N] cluster number of every valid token (its nearest valid centre), -1 for padding."""
    to_centre = dist.gather(2, centres[:, None, :].expand(-1, dist.shape[1], -1))  # [B, N, K]
    centre_valid = mask.gather(1, centres)
    to_centre = to_centre.masked_fill(~centre_valid[:, None, :], float("inf"))
    # a centre always belongs to its own cluster (duplicated tokens could otherwise tie elsewhere)
    own = centres[:, None, :] == torch.arange(dist.shape[1], device=dist.device)[None, :, None]
    to_centre = to_centre.masked_fill(own & centre_valid[:, None, :], -1.0)
    assign = to_centre.argmin(-1)
    return assign.masked_fill(~mask, -1)


class AdaptiveClustering(nn.Module):
    def __init__(self, dim: int, clusters: int, method: str = "density_peak"):
        super().__init__()
        if method not in CLUSTERING:
            raise ValueError(f"unknown clustering method '{method}' (choose from {', '.join(CLUSTERING)})")
        self.clusters, self.method = clusters, method
        self.score = nn.Linear(dim, 1)

    def assignment(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.method == "uniform":
                return uniform_assignment(mask, self.clusters)
            dist = cosine_distances(x, mask)
            if self.method == "kmedoids":
                centres = kmedoids_centres(dist, mask, self.clusters)
            else:
                centres = density_peak_centres(dist, mask, self.clusters)
            return assign_to_centres(dist, mask, centres)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, N, D], mask [B, N] -> (cluster tokens [B, K, D], cluster mask [B, K], assignment [B, N])."""
        assign = self.assignment(x, mask)
        k = self.clusters
        member = F.one_hot(assign.clamp(min=0), k).bool() & mask[:, :, None]  # [B, N, K]
        logits = self.score(x).float()  # [B, N, 1]
        logits = logits.expand(-1, -1, k).masked_fill(~member, float("-inf"))
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0)  # empty clusters: all -inf -> NaN -> 0
        tokens = torch.einsum("bnk,bnd->bkd", weights.to(x.dtype), x)
        return tokens, member.any(dim=1), assign


class AttentionPool(nn.Module):
    """One token from several: a softmax over a learned score of each valid token."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.score(x).squeeze(-1).float().masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)
        return torch.einsum("bn,bnd->bd", weights.to(x.dtype), x)


class AttentionAggregation(nn.Module):
    """N tokens -> K tokens by self-attention merging and a feed-forward transform (see the module docstring).

    The merge attends with learned queries over keys projected from the tokens, and averages the tokens themselves
    (no value projection), so a merged token stays in the space of the tokens it merges: clips in the space of
    frames, phrases in the space of words, where the levels compare them."""

    def __init__(self, dim: int, outputs: int, head_width: int = 64):
        super().__init__()
        self.heads = max(1, dim // head_width)
        self.outputs = outputs
        self.queries = nn.Parameter(torch.randn(outputs, dim))  # unit-variance: attention differs per query at once
        self.norm_tokens = nn.LayerNorm(dim)
        self.mix = nn.MultiheadAttention(dim, self.heads, batch_first=True)
        self.norm_keys = nn.LayerNorm(dim)
        self.query_proj = nn.Linear(dim, dim)
        self.key_proj = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def merge_weights(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """[B, heads, K, N]: per head, each query's softmax over the valid tokens."""
        b, n, d = tokens.shape
        width = d // self.heads
        queries = self.query_proj(self.queries.to(tokens.dtype)).view(self.outputs, self.heads, width)
        keys = self.key_proj(self.norm_keys(tokens)).view(b, n, self.heads, width)
        logits = torch.einsum("khw,bnhw->bhkn", queries, keys).float() * width**-0.5
        return torch.softmax(logits.masked_fill(padding[:, None, None, :], float("-inf")), dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, N, D], mask [B, N] -> (tokens [B, K, D], their mask [B, K], each token's strongest output [B, N])."""
        mask = mask | ~mask.any(dim=1, keepdim=True)  # an item without valid tokens attends to its padding, not NaN
        padding = ~mask
        h = self.norm_tokens(x)
        x = x + self.mix(h, h, h, key_padding_mask=padding, need_weights=False)[0]
        weights = self.merge_weights(x, padding)  # [B, heads, K, N]
        b, n, d = x.shape
        heads = x.view(b, n, self.heads, d // self.heads)
        merged = torch.einsum("bhkn,bnhw->bkhw", weights.to(x.dtype), heads).reshape(b, self.outputs, d)
        out = merged + self.feed_forward(self.norm_out(merged))
        assignment = weights.mean(dim=1).argmax(dim=1).masked_fill(padding, -1)  # the output each token feeds most
        return out, torch.ones(out.shape[:2], dtype=torch.bool, device=x.device), assignment


def make_aggregation(method: str, dim: int, outputs: int) -> nn.Module:
    """The layer that turns N tokens into `outputs` tokens; its forward returns (tokens, mask, assignment)."""
    if method == "attention":
        return AttentionAggregation(dim, outputs)
    return AdaptiveClustering(dim, outputs, method)


class TopToken(nn.Module):
    """The one token at the top of a hierarchy (video from clips, sentence from phrases), made by the same kind of
    layer as the level below: an attention aggregation with K = 1, or an attention pool for the clustering methods."""

    def __init__(self, method: str, dim: int):
        super().__init__()
        self.layer = AttentionAggregation(dim, 1) if method == "attention" else AttentionPool(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layer, AttentionAggregation):
            return self.layer(x, mask)[0][:, 0]
        return self.layer(x, mask)
