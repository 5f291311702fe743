# Shared definitions: the parameters validated once (by hcmi's own check, which names a bad key and suggests the
# right one), the params file every hcmi command reads, wildcard constraints, and the helpers the rules of steps.smk
# call. Every helper is a thin call into the package (hcmi/pipeline.py, hcmi/config.py): nothing is defined twice.

import re
from pathlib import Path

import yaml

from hcmi import pipeline
from hcmi.config import ConfigError, Params
from hcmi.files import write_text
from hcmi.steps.common import validate_params

# validated against the declarations (hcmi/parameters.py); `--config train='{"epochs": 6}'` reaches Snakemake with
# "6" as a string, which the validated parameters hold as the number it spells
try:
    config.update(validate_params(config, "params (params.yaml + --configfile/--config overrides)"))
except ConfigError as error:
    raise WorkflowError(str(error)) from None
PARAMS = Params(config, "params (params.yaml + --configfile/--config overrides)")


def effective_params_file(cfg) -> str:
    """The merged configuration (params.yaml plus any --configfile/--config overrides) as one file for hcmi.

    Rewritten only when its content changes, so its modification time means something."""
    path = Path(".snakemake/hcmi/params.yaml")
    text = yaml.safe_dump(cfg, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        write_text(path, text)
    return str(path)


# Rules run plain `hcmi <step>` commands (the very commands of dvc.yaml); hcmi reads the parameters from the file
# named by HCMI_PARAMS, here the merged configuration of this Snakemake invocation.
shell.prefix(f"set -euo pipefail; export HCMI_PARAMS={effective_params_file(config)}; ")


wildcard_constraints:
    dataset="[a-z0-9_-]+",
    split="[a-z0-9_-]+",
    model="[a-z0-9_-]+",
    seed=r"\d+",


def param(key):
    """The value of a dotted params key (threads and resources)."""
    return PARAMS.get(key)


def declared(wildcards, *keys):
    """{key: value} of the parameters a job's step declares (wildcards filled in): a rule param, so changing any of
    them re-runs the job."""
    return {key: PARAMS.get(key) for key in (key.format(**wildcards) for key in keys)}


def code_hash(step, model=None):
    """The hash of a step's code; for a job that builds a model, of the code of that model's head only."""
    head = None if model is None else PARAMS.variant(model).head
    return pipeline.code_hash(pipeline.STEP[step], head)


def every_value(template, wildcards, over="configured"):
    """Every configured path of an input template: the rule's wildcards as given, each other one over its configured
    values (every dataset; every evaluated model, each with its own seeds), or over every run of the mechanism checks
    (over="checks")."""
    return pipeline.every_value(PARAMS, template, dict(wildcards.items()), over)


def model_names(*groups):
    """A wildcard constraint matching exactly the variants of these model groups (nothing when they are empty)."""
    names = pipeline.group_models(PARAMS, groups)
    return "|".join(re.escape(name) for name in names) if names else "(?!)"


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
