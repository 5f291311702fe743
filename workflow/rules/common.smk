# Shared definitions: the parameters validated once (by hcmi's own check, which names a bad key and suggests the
# right one), the params file every hcmi command reads, wildcard constraints, and the values starred paths expand to.

import re
from pathlib import Path

import yaml

from hcmi.config import ConfigError, coerce_strings
from hcmi.steps.common import validate_params

# `--config train='{"epochs": 6}'` reaches Snakemake with "6" as a string: parse such values as the schema wants
config.update(coerce_strings(config))
try:
    validate_params(config, "params (params.yaml + --configfile/--config overrides)")
except ConfigError as error:
    raise WorkflowError(str(error)) from None


def effective_params_file(cfg) -> str:
    """The merged configuration (params.yaml plus any --configfile/--config overrides) as one file for hcmi.

    Rewritten only when its content changes, so its modification time means something."""
    path = Path(".snakemake/hcmi/params.yaml")
    text = yaml.safe_dump(cfg, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return str(path)


# Rules run plain `hcmi <step>` commands (the very commands of dvc.yaml); hcmi reads the parameters from the file
# named by HCMI_PARAMS, here the merged configuration of this Snakemake invocation.
shell.prefix(f"set -euo pipefail; export HCMI_PARAMS={effective_params_file(config)}; ")


wildcard_constraints:
    dataset="[a-z0-9_-]+",
    split="[a-z0-9_-]+",
    model="[a-z0-9_-]+",
    seed=r"\d+",


# compared models run with every seed, ablation variants with the ablation seeds, zero-shot variants (never trained)
# once, as seed 0
GROUPS = {"models": config["models"], "ablations": config["ablations"], "zero_shot": config["zero_shot"]}
ALL_MODELS = config["models"] + config["ablations"] + config["zero_shot"]


def seeds_for(model):
    if model in config["models"]:
        return config["seeds"]
    return [0] if model in config["zero_shot"] else config["ablation_seeds"]


STILLS_TAG = "synthetic-stills"  # backbone.pretrained: pretrained by the weights step on the embedded still images
PRETRAIN_COMPUTE = ("compute.train_threads", "compute.numerics", "compute.device", "compute.deterministic")


def backbones_in_use(wildcards):
    """The distinct backbones (name and weights) of every configured variant, and the pretraining parameters where a
    backbone is pretrained on stills: what the weights record depends on, so that adding a variant on a backbone
    already in use, or changing pretraining that no backbone uses, re-runs nothing."""
    found = []
    for model in ALL_MODELS:
        backbone = {**config["backbone"], **config["variants"][model].get("backbone", {})}
        if backbone not in found:
            found.append(backbone)
    if any(backbone["pretrained"] == STILLS_TAG for backbone in found):
        found.append({"pretrain": config["pretrain"], **{key: param(key) for key in PRETRAIN_COMPUTE}})
    return found


def model_seeds(wildcards):
    """The seeds one model is summarized over: adding a variant to another group re-runs no other model's summary."""
    return seeds_for(wildcards.model)


# values derived from the parameters that a step's Snakemake rule watches instead of the keys it declares
DERIVED = {"backbones_in_use": backbones_in_use, "model_seeds": model_seeds}


def model_names(groups):
    """A wildcard constraint matching exactly the variants of these model groups (nothing when they are empty)."""
    names = [name for group in groups for name in GROUPS[group]]
    return "|".join(re.escape(name) for name in names) if names else "(?!)"


def param(key):
    """The value of a dotted params key."""
    value = config
    for part in key.split("."):
        value = value[part]
    return value


def check_jobs_fit_slurm_nodes():
    """On SLURM, before anything is submitted: stop when a job asks for more CPUs or memory than any node has (it
    would pend for ever). CPUs are a rule's threads (params.yaml, compute.*_threads) unless its cpus_per_task
    resource says otherwise; memory is its mem_mb resource."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    from hcmi.cluster import Request, cluster_nodes, oversized

    nodes = cluster_nodes()
    if nodes is None:  # sinfo unavailable: the node size is unknown, SLURM alone judges the requests
        return
    requests = []
    for job in workflow.dag.needrun_jobs():
        if job.is_local:
            continue
        resources = job.resources
        cpus = resources.get("cpus_per_task") or job.threads
        cpus = cpus if isinstance(cpus, int) and cpus > 0 else None  # cpus_per_task < 0: no CPU count requested
        per_cpu = resources.get("mem_mb_per_cpu")
        memory = per_cpu * (cpus or 1) if isinstance(per_cpu, int) else resources.get("mem_mb")
        memory = memory if isinstance(memory, int) else None
        requests.append(Request(job.rule.name, cpus, memory, resources.get("slurm_partition")))
    problems = oversized(requests, nodes)
    if problems:
        raise WorkflowError(
            "these jobs would never start on this cluster (node sizes from sinfo):\n  " + "\n  ".join(problems)
            + "\nLower the request in params.yaml (compute.train_threads, compute.sample_threads, "
            "compute.train_mem_mb) or in the profile (default-resources, set-resources), or choose a partition "
            "with larger nodes (slurm_partition).")
