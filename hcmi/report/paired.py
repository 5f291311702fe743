"""Paired differences between two models evaluated on the same test queries with the same seeds, with an interval
and the verdict it allows; numpy and scipy only.

Two variants trained with the same seed start from the same weights and see the same batches, and both are scored on
the same queries, so their results are paired: the difference of per-query outcomes (1 for a hit at rank 1, say)
varies far less than either model's result. A rerun would change two things, crossed: the seeds, and the queries
(every seed is scored on the same queries). So the per-query differences d[seed, query] are read as a two-way design,

    d = mean + seed effect + query effect + residual,

and the variance of their mean is that of each part over what averages it: seed variance / seeds + query variance /
queries + residual variance / (seeds x queries). It is estimated from three observable variances (the method of
moments of a crossed random-effects design):

    V_seeds    = variance of the seed means / seeds                 (seed variance + residual's share)
    V_queries  = variance of the mean of the seed-averaged queries  (query variance + residual's share)
    V_residual = variance of the mean of the residuals / seeds      (the residual's share, counted twice above)
    variance   = V_seeds + V_queries - V_residual

Queries are not always independent draws: the captions of one video, or the two videos of a twin pair, stand or fall
together. Queries of one *cluster* (the data's sampling unit) are therefore summed before their variance is taken
(the cluster-robust variance of a mean). A query that is its own cluster gives the usual variance.

The interval is Student's t around the difference, with Satterthwaite's degrees of freedom for that sum of variances:
three seeds carry two degrees of freedom, so where the seeds' spread makes up most of the variance the interval is as
wide as two degrees of freedom require (a bootstrap over three seeds would not be).

A report makes many comparisons at once (every model and ablation, every measure), and several of them are of no
real effect: at 95 % each of those excludes 0 in one run out of twenty, so a rerun would turn some "no effect" into
"helps" or "hurts" by chance alone. The verdict therefore comes from the family interval: the same t at level
1 - 5 % / m for a family of m comparisons (Bonferroni), so that all m hold at once with 95 % probability. The first
model's component *helps* when the whole family interval lies above 0, *hurts* when it lies below; otherwise it is
*equivalent* when the family interval lies inside the equivalence margin (-margin, +margin) (`report.
equivalence_margin`, in points of the measure: a precise zero, two one-sided tests at the family's level), and
*undetermined* when the interval covers 0 and reaches past the margin (no information either way). The smallest
effect the family can detect (at its level, with 80 % power) is (t of the family level + t of 80 %) standard errors.

How many seeds would determine an undetermined comparison: with n seeds instead of S the seed part of the variance
shrinks as S / n and the query part stays (the same test queries), variance(n) = S V_seeds / n + V_queries -
S V_residual / n, each with its degrees of freedom at n seeds; the smallest n whose family interval around the
measured difference would exclude 0 or fit inside the margin is that count (none when the queries alone keep it
undetermined).
"""

from __future__ import annotations

import numpy as np
# the t quantile only (scipy.stats.t.ppf computes it with the same function): importing scipy.stats takes about a second,
# in every report process and every report notebook's kernel
from scipy.special import stdtrit

LEVEL = 0.95
POWER = 0.80
VERDICTS = ("helps", "hurts", "equivalent", "undetermined")
MAX_SEEDS = 100  # the largest seed count `seeds_to_determine` looks at


def t_quantile(p: float, df: float) -> float:
    """The p quantile of Student's t with df degrees of freedom (the normal's for infinite df)."""
    return float(stdtrit(df, p))


def two_sided_t(level: float, df: float) -> float:
    """The t (normal z for infinite df) of a two-sided interval at `level` (1.96 at 95 % and many df)."""
    return t_quantile(0.5 + level / 2.0, df)


def family_level(level: float, family: int) -> float:
    """Bonferroni: each of `family` intervals at this level makes all of them hold at once with `level`."""
    return 1.0 - (1.0 - level) / max(1, family)


def clustered_variance_of_mean(values: np.ndarray, codes: np.ndarray, clusters: int) -> float:
    """The cluster-robust variance of the mean of `values` (deviations from their mean): the deviations are summed
    within each cluster (codes: 0..clusters-1), and those sums are treated as independent draws."""
    sums = np.bincount(codes, weights=values - values.mean(), minlength=clusters)
    return float(clusters / (clusters - 1) * np.sum(sums ** 2) / len(values) ** 2)


def variance_components(diff: np.ndarray, codes: np.ndarray, clusters: int) -> dict:
    """V_seeds, V_queries and V_residual (module docstring) of a [seeds, queries] array of differences, and the
    variance of its mean with its Satterthwaite degrees of freedom."""
    seeds = diff.shape[0]
    seed_means, query_means = diff.mean(axis=1), diff.mean(axis=0)
    parts = {"seeds": 0.0, "queries": 0.0, "residual": 0.0}
    dfs = {"seeds": seeds - 1, "queries": clusters - 1, "residual": (seeds - 1) * (clusters - 1)}
    if seeds > 1:
        parts["seeds"] = float(seed_means.var(ddof=1) / seeds)
    if clusters > 1:
        parts["queries"] = clustered_variance_of_mean(query_means, codes, clusters)
    if seeds > 1 and clusters > 1:
        residual = diff - seed_means[:, None] - query_means[None, :] + diff.mean()
        parts["residual"] = sum(clustered_variance_of_mean(row, codes, clusters)
                                for row in residual) / (seeds * (seeds - 1))
    # the residual is counted in both other parts and taken out once; by chance the sum can fall below a part it
    # stands for, never below the residual's own share
    variance = max(parts["seeds"] + parts["queries"] - parts["residual"], parts["residual"])
    terms = sum(parts[k] ** 2 / dfs[k] for k in parts if dfs[k] > 0 and parts[k] > 0)
    df = variance ** 2 / terms if terms > 0 else float("inf")
    return {"variance": variance, "df": df, **{f"v_{k}": v for k, v in parts.items()}}


def paired_difference(first, second, level: float = LEVEL, family: int = 1, clusters=None) -> dict:
    """The mean over seeds and queries of first - second, where both are [seeds, queries] arrays of per-query outcomes
    paired by row (seed) and column (query); NaN marks a query that does not count (no twin, say) in both.
    `clusters`: a label per query (column) whose queries are not independent (one video's captions, a twin pair);
    None: every query its own. Returns the difference, its interval (low, high), its family interval (family_low,
    family_high: at the level that makes `family` comparisons hold at once), the standard error with its degrees of
    freedom and variance parts, the smallest effect the family can detect, each seed's own difference, and the
    counts."""
    a, b = np.atleast_2d(np.asarray(first, dtype=float)), np.atleast_2d(np.asarray(second, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired results must have the same shape (seeds x queries): {a.shape} vs {b.shape}")
    labels = np.arange(a.shape[1]) if clusters is None else np.asarray(clusters)
    if labels.shape != (a.shape[1],):
        raise ValueError(f"one cluster label per query: {labels.shape[0]} labels for {a.shape[1]} queries")
    keep = ~(np.isnan(a) | np.isnan(b)).any(axis=0)
    diff = (a - b)[:, keep]
    seeds, queries = diff.shape
    if seeds == 0 or queries == 0:
        raise ValueError("no paired query to compare")
    _, codes = np.unique(labels[keep], return_inverse=True)
    n_clusters = int(codes.max()) + 1
    if seeds == 1 and n_clusters == 1:
        raise ValueError("one seed and one cluster of queries: nothing to estimate the spread of a difference from")
    parts = variance_components(diff, codes, n_clusters)
    se, df = float(np.sqrt(parts["variance"])), parts["df"]
    joint = family_level(level, family)
    difference = float(diff.mean())
    half, family_half = two_sided_t(level, df) * se, two_sided_t(joint, df) * se
    return {"difference": difference, "low": difference - half, "high": difference + half,
            "family_low": difference - family_half, "family_high": difference + family_half, "se": se, "df": df,
            "v_seeds": parts["v_seeds"], "v_queries": parts["v_queries"], "v_residual": parts["v_residual"],
            "detectable": (two_sided_t(joint, df) + t_quantile(POWER, df)) * se,
            "per_seed": [float(d) for d in diff.mean(axis=1)], "seeds": seeds, "queries": queries,
            "clusters": n_clusters, "level": level, "family": max(1, family), "family_level": joint}


def verdict(result: dict, margin: float) -> str:
    """helps / hurts / equivalent / undetermined, from the family interval of first - second and the equivalence
    margin (module docstring)."""
    return _verdict(result["family_low"], result["family_high"], margin)


def _verdict(low: float, high: float, margin: float) -> str:
    if low > 0:
        return "helps"
    if high < 0:
        return "hurts"
    if -margin < low and high < margin:
        return "equivalent"
    return "undetermined"


def seeds_to_determine(result: dict, margin: float, max_seeds: int = MAX_SEEDS) -> int | None:
    """The fewest seeds (more than the result has) whose measured variance parts would make its verdict helps, hurts
    or equivalent around the same difference; None when not within max_seeds (the query part alone is too wide)."""
    seeds, clusters = result["seeds"], result["clusters"]
    joint = result["family_level"]
    for n in range(seeds + 1, max_seeds + 1):
        parts = {"seeds": result["v_seeds"] * seeds / n, "queries": result["v_queries"],
                 "residual": result["v_residual"] * seeds / n}
        dfs = {"seeds": n - 1, "queries": clusters - 1, "residual": (n - 1) * (clusters - 1)}
        variance = max(parts["seeds"] + parts["queries"] - parts["residual"], parts["residual"])
        terms = sum(parts[k] ** 2 / dfs[k] for k in parts if dfs[k] > 0 and parts[k] > 0)
        df = variance ** 2 / terms if terms > 0 else float("inf")
        half = two_sided_t(joint, df) * float(np.sqrt(variance))
        d = result["difference"]
        if _verdict(d - half, d + half, margin) != "undetermined":
            return n
    return None


def describe(result: dict, unit: str = "") -> str:
    """'+12.3 [+8.1, +16.0]': the difference and its interval; then '(all at once [+6.0, +18.2])', the family
    interval, where there is a family."""
    text = f"{result['difference']:+.1f}{unit} [{result['low']:+.1f}, {result['high']:+.1f}]"
    if result.get("family", 1) > 1:
        text += f" (all at once [{result['family_low']:+.1f}, {result['family_high']:+.1f}])"
    return text
