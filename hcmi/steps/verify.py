"""`hcmi verify --dataset D --model M --seed S`: re-evaluate a trained checkpoint and say whether it reproduces the
metrics recorded in its metrics.json (every retrieval metric, exactly), and whether the code, parameters and
environment match those recorded."""

from __future__ import annotations

import logging

from hcmi import provenance
from hcmi.errors import HcmiError
from hcmi.files import read_json
from hcmi.steps.evaluate import evaluate
from hcmi.steps.summarize import metric_values

log = logging.getLogger(__name__)


class NotReproduced(HcmiError):
    """The re-evaluation differs from the recorded metrics; the message lists the differences."""


def compare(recorded: dict, fresh: dict) -> list[str]:
    """The metrics that differ (name: recorded -> now), missing ones included."""
    old, new = metric_values(recorded), metric_values(fresh)
    return [f"{key}: {old.get(key)} -> {new.get(key)}" for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)]


def context_differences(recorded: dict | None, params) -> list[str]:
    """What differs between the recorded evaluation and now, beside the numbers (code, parameters, libraries)."""
    if not recorded:
        return ["the recorded metrics carry no provenance"]
    notes = []
    code = provenance.code_version("hcmi.steps.evaluate")
    if recorded["code"]["step_code_sha256"] != code["step_code_sha256"]:
        notes.append("the evaluation code differs from the recorded one")
    values = params.declared_values()
    if recorded["params"]["values"] != values:
        notes.append("the evaluation parameters differ from the recorded ones")
    libraries = provenance.environment()["libraries"]
    for name, version in recorded["environment"]["libraries"].items():
        if libraries.get(name) != version:
            notes.append(f"{name} {version} was recorded, {libraries.get(name)} is installed")
    return notes


def run(params, layout, dataset: str, variant: str, seed: int) -> dict:
    path = layout.seed_metrics(dataset, variant, seed)
    if not path.exists():
        raise NotReproduced(f"{path}: no recorded metrics to verify against; run `hcmi evaluate --dataset {dataset} "
                            f"--model {variant} --seed {seed}` first")
    recorded = read_json(path)
    fresh, _, _ = evaluate(params, layout, dataset, variant, seed)
    differences = compare(recorded, fresh)
    for note in context_differences(recorded.get("provenance"), params):
        log.warning("%s", note)
    if differences:
        raise NotReproduced(f"{path}: the checkpoint does not reproduce {len(differences)} recorded metric(s):\n  "
                            + "\n  ".join(differences[:20]))
    log.info("%s: reproduced — all %d recorded metrics are identical", path, len(metric_values(recorded)))
    return {"reproduced": True, "metrics": len(metric_values(recorded))}
