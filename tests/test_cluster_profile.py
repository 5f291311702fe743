"""The SLURM profile renders every job, training with its GPU, memory and time requests (dry run, no cluster)."""

import re

import pytest

from conftest import tiny_params_dict
from workflow_helpers import copy_workflow, snakemake

pytest.importorskip("snakemake_executor_plugin_slurm")


def test_slurm_profile_dry_run_requests_gpus_for_training(tmp_path):
    params = tiny_params_dict()
    params["compute"].update(train_gpus=2, train_mem_mb=64000, train_runtime_min=720)
    workdir = copy_workflow(tmp_path / "wf", params)
    result = snakemake(workdir, "-n", "all", "--profile", "workflow/profiles/slurm")
    out = result.stdout + result.stderr
    train_jobs = re.findall(r"rule train:.*?resources: ([^\n]*)", out, flags=re.S)
    assert len(train_jobs) == 3, out[-3000:]
    for resources in train_jobs:
        assert "gpu=2" in resources and "mem_mb=64000" in resources and "runtime=720" in resources, resources
        assert "cpus_per_task=8" in resources, resources
    evaluate_jobs = re.findall(r"rule evaluate:.*?resources: ([^\n]*)", out, flags=re.S)
    assert evaluate_jobs and all("gpu=" not in r for r in evaluate_jobs)
