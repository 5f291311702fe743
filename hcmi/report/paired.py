"""Paired differences between two models evaluated on the same test queries with the same seeds, with a bootstrap
interval and the verdict it allows; numpy only.

Two variants trained with the same seed start from the same weights and see the same batches, and both are scored on
the same queries, so their results are paired: the difference of per-query outcomes (1 for a hit at rank 1, say)
varies far less than either model's result. The interval resamples what a rerun would change: the seeds (drawn with
replacement, their deviations widened by sqrt(n / (n - 1)), since a bootstrap over n values spreads their mean by only
(n - 1) / n of its variance) and, within each drawn seed, the queries (drawn with replacement), the same draws for
both models. Its
95 % percentile bounds give the verdict: the first model's component *helps* when the whole interval lies above 0,
*hurts* when it lies below, and otherwise there is *no detectable effect*. The smallest effect the seeds and queries
can detect (at a 5 % two-sided level, with 80 % power) is (1.96 + 0.84) bootstrap standard errors.
"""

from __future__ import annotations

import numpy as np

DRAWS = 10_000  # bootstrap resamples: the percentile bounds move by well under 0.1 point between generator seeds
LEVEL = 0.95
BOOTSTRAP_SEED = 0  # the interval is a function of the results alone: the same files give the same bounds
DETECTABLE_Z = 1.959964 + 0.841621  # z of a 5 % two-sided test plus z of 80 % power
CHUNK = 500  # resamples computed at a time (memory: CHUNK x seeds x queries indices)


def paired_difference(first, second, draws: int = DRAWS, level: float = LEVEL, seed: int = BOOTSTRAP_SEED) -> dict:
    """The mean over seeds and queries of first - second, where both are [seeds, queries] arrays of per-query outcomes
    paired by row (seed) and column (query); NaN marks a query that does not count (no twin, say) in both. Returns
    the difference, its interval (low, high), the bootstrap standard error, the smallest detectable effect, each
    seed's own difference, and the counts."""
    a, b = np.atleast_2d(np.asarray(first, dtype=float)), np.atleast_2d(np.asarray(second, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired results must have the same shape (seeds x queries): {a.shape} vs {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b)).any(axis=0)
    diff = (a - b)[:, keep]
    seeds, queries = diff.shape
    if seeds == 0 or queries == 0:
        raise ValueError("no paired query to compare")
    # a bootstrap over n seeds spreads their means by (n - 1) / n of their variance: widen each seed's deviation from
    # the grand mean by sqrt(n / (n - 1)) so that the seed part of the interval has the unbiased variance
    widened = diff + (np.sqrt(seeds / (seeds - 1)) - 1.0) * (diff.mean(axis=1, keepdims=True) - diff.mean()) \
        if seeds > 1 else diff
    rng = np.random.default_rng(seed)
    means = np.empty(draws)
    for start in range(0, draws, CHUNK):
        n = min(CHUNK, draws - start)
        drawn_seeds = rng.integers(0, seeds, size=(n, seeds)) if seeds > 1 else np.zeros((n, 1), dtype=np.int64)
        drawn_queries = rng.integers(0, queries, size=(n, seeds, queries))
        means[start:start + n] = widened[drawn_seeds[:, :, None], drawn_queries].mean(axis=(1, 2))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    se = float(means.std(ddof=1))
    return {"difference": float(diff.mean()), "low": float(low), "high": float(high), "se": se,
            "detectable": DETECTABLE_Z * se, "per_seed": [float(d) for d in diff.mean(axis=1)],
            "seeds": seeds, "queries": queries, "level": level, "draws": draws}


def verdict(result: dict) -> str:
    """helps / hurts / no detectable effect, from the interval of first - second."""
    if result["low"] > 0:
        return "helps"
    if result["high"] < 0:
        return "hurts"
    return "no detectable effect"


def describe(result: dict, unit: str = "") -> str:
    """'+12.3 [+8.1, +16.0]': the difference and its interval."""
    return f"{result['difference']:+.1f}{unit} [{result['low']:+.1f}, {result['high']:+.1f}]"
