"""`hcmi verify --dataset D --model M --seed S`: re-evaluate a trained checkpoint and say whether it reproduces the
metrics recorded in its metrics.json (every retrieval metric, exactly), and whether the code, parameters and
environment match those recorded."""

from __future__ import annotations

import json
import logging

from hcmi import numerics, provenance
from hcmi.errors import HcmiError
from hcmi.files import read_json
from hcmi.pipeline import STEP
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


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def context_differences(recorded: dict | None, params, dataset: str, variant: str, seed: int) -> list[str]:
    """What differs between the recorded evaluation and now beside the numbers, and only what differs: the
    evaluation's code, its declared parameters, and each item of the environment that decides the numbers
    (libraries, Python, CUDA, the CPU, its kernel flags, compute.numerics and the settings it pinned, torch's kernel
    level, MKL's and oneDNN's versions)."""
    if not recorded:
        return ["the recorded metrics carry no provenance"]
    notes = []
    code = provenance.code_version("hcmi.steps.evaluate")
    if recorded["code"]["step_code_sha256"] != code["step_code_sha256"]:
        notes.append("the evaluation code differs from the recorded one")
    step = STEP["evaluate"]
    now_values = params.restrict(step.declared_params(dataset=dataset, model=variant, seed=seed),
                                 step.name).declared_values()
    then_values = recorded["params"]["values"]
    for key in sorted(set(now_values) | set(then_values)):
        if now_values.get(key) != then_values.get(key):
            notes.append(f"parameter {key}: {then_values.get(key)!r} was recorded, {now_values.get(key)!r} now")
    then_env = _flat(recorded.get("environment", {}))
    now_env = _flat(provenance.environment(now_values.get("compute.numerics")))
    for key in sorted(set(then_env) | set(now_env)):
        if then_env.get(key) != now_env.get(key):
            notes.append(f"environment {key}: {then_env.get(key)!r} was recorded, {now_env.get(key)!r} now")
    return notes


def recorded_provenance(layout, dataset: str, variant: str, seed: int) -> dict | None:
    """What made the recorded evaluation (provenance.json beside its metrics), None where nothing was recorded."""
    path = layout.seed_provenance(dataset, variant, seed)
    return read_json(path).get("provenance") if path.exists() else None


def recorded_settings(layout, dataset: str, variant: str, seed: int) -> list[str]:
    """The evaluation's parameters as its provenance.json recorded them, as KEY=VALUE settings (JSON is YAML)."""
    values = (recorded_provenance(layout, dataset, variant, seed) or {}).get("params", {}).get("values", {})
    return [f"{key}={json.dumps(value)}" for key, value in sorted(values.items())]


def run(params, layout, dataset: str, variant: str, seed: int) -> dict:
    path = layout.seed_metrics(dataset, variant, seed)
    if not path.exists():
        raise NotReproduced(f"{path}: no recorded metrics to verify against; run `hcmi evaluate --dataset {dataset} "
                            f"--model {variant} --seed {seed}` first")
    recorded = read_json(path)
    fresh, _, _ = evaluate(params, layout, dataset, variant, seed)
    differences = compare(recorded, fresh)
    context = context_differences(recorded_provenance(layout, dataset, variant, seed), params, dataset, variant, seed)
    if differences:
        if not numerics.is_x86():
            context.append(numerics.agreement(params.get("compute.numerics")))
        why = ("\n  what differs from the recorded run:\n    " + "\n    ".join(context) if context else
               "\n  code, parameters and environment are as recorded")
        raise NotReproduced(f"{path}: the checkpoint does not reproduce {len(differences)} recorded metric(s):\n  "
                            + "\n  ".join(differences[:20]) + why)
    for note in context:
        log.info("differs from the recorded run (the metrics reproduce all the same): %s", note)
    log.info("these numbers agree with %s", numerics.agreement(params.get("compute.numerics")))
    log.info("%s: reproduced — all %d recorded metrics are identical", path, len(metric_values(recorded)))
    return {"reproduced": True, "metrics": len(metric_values(recorded))}
