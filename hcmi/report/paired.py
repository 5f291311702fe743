"""Paired differences between two models evaluated on the same test queries with the same seeds, with a bootstrap
interval and the verdict it allows; numpy only.

Two variants trained with the same seed start from the same weights and see the same batches, and both are scored on
the same queries, so their results are paired: the difference of per-query outcomes (1 for a hit at rank 1, say)
varies far less than either model's result. The interval resamples what a rerun would change: the seeds (drawn with
replacement, their deviations widened by sqrt(n / (n - 1)), since a bootstrap over n values spreads their mean by only
(n - 1) / n of its variance) and, within each drawn seed, the queries (drawn with replacement), the same draws for
both models. Its 95 % percentile bounds are each comparison's interval.

A report makes many comparisons at once (every model and ablation, every measure), and several of them are of no
real effect: at 95 % each of those excludes 0 in one run out of twenty, so a rerun would turn some "no effect" into
"helps" or "hurts" by chance alone. The verdict therefore comes from the family interval: the same bootstrap's
percentile bounds at 1 - 5 % / m for a family of m comparisons (Bonferroni), so that all m hold at once with 95 %
probability. The first model's component *helps* when the whole family interval lies above 0, *hurts* when it lies
below, and otherwise there is *no detectable effect*. The smallest effect the family can detect (at its level, with
80 % power) is (z of the family level + 0.84) bootstrap standard errors.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

DRAWS = 20_000  # bootstrap resamples: a family interval of 18 comparisons has 28 of them beyond each bound
LEVEL = 0.95
BOOTSTRAP_SEED = 0  # the interval is a function of the results alone: the same files give the same bounds
POWER_Z = 0.841621  # z of 80 % power
CHUNK = 500  # resamples computed at a time (memory: CHUNK x seeds x queries indices)


def two_sided_z(level: float) -> float:
    """The z of a two-sided interval at `level` (1.96 at 95 %)."""
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def family_level(level: float, family: int) -> float:
    """Bonferroni: each of `family` intervals at this level makes all of them hold at once with `level`."""
    return 1.0 - (1.0 - level) / max(1, family)


def paired_difference(first, second, draws: int = DRAWS, level: float = LEVEL, seed: int = BOOTSTRAP_SEED,
                      family: int = 1) -> dict:
    """The mean over seeds and queries of first - second, where both are [seeds, queries] arrays of per-query outcomes
    paired by row (seed) and column (query); NaN marks a query that does not count (no twin, say) in both. Returns
    the difference, its interval (low, high), its family interval (family_low, family_high: at the level that makes
    `family` comparisons hold at once), the bootstrap standard error, the smallest effect the family can detect, each
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
    tail, joint = (1.0 - level) / 2.0, family_level(level, family)
    family_tail = (1.0 - joint) / 2.0
    low, high, family_low, family_high = np.quantile(means, [tail, 1.0 - tail, family_tail, 1.0 - family_tail])
    se = float(means.std(ddof=1))
    return {"difference": float(diff.mean()), "low": float(low), "high": float(high),
            "family_low": float(family_low), "family_high": float(family_high), "se": se,
            "detectable": (two_sided_z(joint) + POWER_Z) * se, "per_seed": [float(d) for d in diff.mean(axis=1)],
            "seeds": seeds, "queries": queries, "level": level, "family": max(1, family), "family_level": joint,
            "draws": draws}


def verdict(result: dict) -> str:
    """helps / hurts / no detectable effect, from the family interval of first - second."""
    if result["family_low"] > 0:
        return "helps"
    if result["family_high"] < 0:
        return "hurts"
    return "no detectable effect"


def describe(result: dict, unit: str = "") -> str:
    """'+12.3 [+8.1, +16.0]': the difference and its interval; then '(all at once [+6.0, +18.2])', the family
    interval, where there is a family."""
    text = f"{result['difference']:+.1f}{unit} [{result['low']:+.1f}, {result['high']:+.1f}]"
    if result.get("family", 1) > 1:
        text += f" (all at once [{result['family_low']:+.1f}, {result['family_high']:+.1f}])"
    return text
