"""`hcmi summarize --dataset D --model M`: mean and spread of a model's metrics over its seeds, and every seed's
training curves in one table (curves.csv) for the reports.

Writes metrics.json (mean, std and every seed's numbers), provenance.json (what made the summary and each seed's
provenance), and scores.json / spread.json: the seeds' mean and standard deviation of the headline numbers, the keys
of each run's scores.json, so that `dvc metrics show` puts them in the same columns."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from hcmi import provenance, scores
from hcmi.files import read_json, write_json, write_table
from hcmi.steps.common import fingerprints

log = logging.getLogger(__name__)

NOT_METRICS = ("run", "provenance", "model_provenance")


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, sub, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def metric_values(result: dict) -> dict[str, float]:
    """Every numeric metric of one result by dotted key (provenance and run details left out)."""
    values: dict = {}
    _flatten("", {k: v for k, v in result.items() if k not in NOT_METRICS}, values)
    return values


def summarize_seeds(per_seed: dict[int, dict]) -> dict:
    """Mean and (sample) standard deviation over seeds of every numeric metric, plus the per-seed results."""
    flat = {seed: metric_values(result) for seed, result in per_seed.items()}
    keys = sorted(set().union(*(v.keys() for v in flat.values())))
    mean, std = {}, {}
    for key in keys:
        vals = np.array([flat[s].get(key, np.nan) for s in flat], dtype=float)
        mean[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        std[key] = float(np.nanstd(vals, ddof=1)) if np.isfinite(vals).sum() > 1 else 0.0
    return {"seeds": sorted(per_seed), "mean": _nest(mean), "std": _nest(std),
            "per_seed": {str(s): per_seed[s] for s in sorted(per_seed)}}


def curves(layout, dataset: str, variant: str, seeds: list[int]) -> pd.DataFrame:
    """Every seed's train_log and val_log rows, long format: seed, log (train | val), step, epoch, values."""
    frames = []
    for seed in seeds:
        for kind, path in (("train", layout.train_log(dataset, variant, seed)),
                           ("val", layout.val_log(dataset, variant, seed))):
            if path.exists() and path.stat().st_size > 1:
                table = pd.read_csv(path)
                frames.append(table.assign(seed=seed, log=kind))
    if not frames:
        return pd.DataFrame(columns=["seed", "log", "step", "epoch"])
    table = pd.concat(frames, ignore_index=True)
    return table[["seed", "log"] + [c for c in table.columns if c not in ("seed", "log")]]


def run(params, layout, dataset: str, variant: str) -> dict:
    started = time.time()
    seeds = params.seeds_for(variant)
    per_seed = {seed: read_json(layout.seed_metrics(dataset, variant, seed)) for seed in seeds}
    summary = summarize_seeds(per_seed)
    summary.update({"dataset": dataset, "model": variant})
    made = {"provenance": provenance.collect(
        module=__name__, params=provenance.params_record(list(params.allowed or []), params.declared_values()),
        data=fingerprints({f"seed {s}": layout.seed_metrics(dataset, variant, s) for s in seeds}), runtime=None,
        started=started),
        "per_seed": {str(s): read_json(layout.seed_provenance(dataset, variant, s)) for s in seeds}}
    write_table(layout.curves(dataset, variant), curves(layout, dataset, variant, seeds))
    write_json(layout.provenance(dataset, variant), made)
    write_json(layout.scores(dataset, variant), scores.scores(summary["mean"]))
    write_json(layout.spread(dataset, variant), scores.scores(summary["std"]))
    write_json(layout.metrics(dataset, variant), summary)
    log.info("%s/%s over seeds %s: t2v R@1 %.1f ± %.1f", dataset, variant, summary["seeds"],
             summary["mean"]["t2v"]["R1"], summary["std"]["t2v"]["R1"])
    return summary
