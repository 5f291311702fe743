"""The SLURM profile without a cluster: a dry run renders every job, training with the CPUs, GPUs, memory and time of
params.yaml's `compute` section, and no rule needs --cores; the node-size check names the jobs that fit no node; the
cluster fixture says why it cannot install SLURM. (tests/test_slurm.py runs the profile on a real one-node cluster.)"""

import re

import pytest
import yaml

from conftest import REPO, require_slurm_plugin, tiny_params_dict
from workflow_helpers import copy_workflow, snakemake

require_slurm_plugin()


def test_slurm_profile_dry_run_requests_params_resources_for_training(tmp_path):
    params = tiny_params_dict()
    params["compute"].update(train_threads=3, train_gpus=2, train_mem_mb=64000, train_runtime_min=720)
    workdir = copy_workflow(tmp_path / "wf", params)
    # a dry run is a local run: --cores only keeps it from scaling the threads down to 1
    result = snakemake(workdir, "-n", "all", "--profile", "profiles/slurm", "--cores", "8")
    out = result.stdout + result.stderr
    train_jobs = re.findall(r"rule train:\n(.*?)\nShell command", out, flags=re.S)
    assert len(train_jobs) == 3, out[-3000:]
    for job in train_jobs:
        resources = re.search(r"resources: ([^\n]*)", job).group(1)
        assert "gpu=2" in resources and "mem_mb=64000" in resources and "runtime=720" in resources, resources
        assert "threads: 3" in job, "CPUs per training job come from compute.train_threads"
        assert "cpus_per_task" not in resources, "the profile does not override them"
    evaluate_jobs = re.findall(r"rule evaluate:.*?resources: ([^\n]*)", out, flags=re.S)
    assert evaluate_jobs and all("gpu=" not in r for r in evaluate_jobs)


def test_no_rule_needs_cores_under_the_cluster_executor(tmp_path):
    # unlike a dry run (local, one core by default), --summary evaluates every rule under the SLURM executor,
    # where no --cores is given: a rule asking for `workflow.cores` threads fails there
    workdir = copy_workflow(tmp_path / "wf", tiny_params_dict())
    result = snakemake(workdir, "--summary", "all", "bench", "--profile", "profiles/slurm", check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "data/bench/summary.md" in out, out[-3000:]


def test_the_profile_names_its_job_status_command():
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert profile["slurm-status-command"] in ("sacct", "squeue")
    assert "cpus_per_task" not in str(profile.get("set-resources", {})), "CPUs come from params, not the profile"


def test_sinfo_lines_become_nodes():
    from hcmi.cluster import Node, parse_sinfo

    assert parse_sinfo("debug*|2|24105\ngpu|64|512000\n\n") == [Node("debug", 2, 24105), Node("gpu", 64, 512000)]


def test_requests_that_fit_no_node_are_named_with_the_largest_node():
    from hcmi.cluster import Node, Request, oversized

    nodes = [Node("cpu", 8, 32000), Node("gpu", 32, 256000)]
    assert oversized([Request("train", 16, 64000), Request("sample", 2, None), Request("report", None, None)],
                     nodes) == []
    assert oversized([Request("train", 16, 64000, partition="cpu")], nodes) == [
        "rule train: a job asks for 16 CPUs and 64000 MB, but the largest node of partition cpu has 8 CPUs and "
        "32000 MB"]
    assert oversized([Request("train", 8, 300000), Request("train", 64, 1)], nodes) == [
        "rule train: a job asks for 64 CPUs and 1 MB, but the largest node of the cluster has 32 CPUs and 256000 MB"]
    assert oversized([Request("train", 1, 1, partition="big")], nodes) == ["rule train: partition big has no nodes"]


def test_without_root_or_apt_get_the_cluster_fixture_says_why_it_cannot_install(monkeypatch):
    import slurm_cluster

    monkeypatch.setattr(slurm_cluster, "missing_programs", lambda: ["sbatch", "slurmd"])
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 1000)
    with pytest.raises(slurm_cluster.ClusterUnavailable, match=r"missing \(sbatch, slurmd\).*needs root"):
        slurm_cluster.install_packages()
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 0)
    monkeypatch.setattr(slurm_cluster, "which", lambda program: None)
    with pytest.raises(slurm_cluster.ClusterUnavailable, match="no apt-get"):
        slurm_cluster.install_packages()
