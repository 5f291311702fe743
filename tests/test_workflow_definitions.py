"""Snakemake and DVC must define the same steps: same commands, same outputs (so they cannot drift apart)."""

import re

import pytest

from conftest import tiny_params_dict
from workflow_helpers import copy_workflow, dvc, planned_jobs, snakemake


def params_with_matrix() -> dict:
    params = tiny_params_dict()
    params["models"] = ["baseline", "hcmi"]
    params["seeds"] = [0, 1]
    params["ablations"] = ["hcmi-no-enhance"]
    params["ablation_seeds"] = [3]
    return params


def snakemake_steps(workdir):
    steps = {}
    for job in planned_jobs(workdir, "--forceall", "all"):
        command = re.sub(r"\s*>\s*\S+\s+2>&1\s*$", "", job["command"])  # the rule's log redirection
        steps[command] = {"rule": job["rule"], "outputs": set(job["outputs"])}
    return steps


def dvc_steps(workdir):
    from dvc.repo import Repo

    steps = {}
    with Repo(str(workdir)) as repo:
        for stage in repo.index.stages:
            outs = {out.def_path for out in stage.outs if not out.persist}
            persist = {out.def_path for out in stage.outs if out.persist}
            name = stage.name.split("@")[0].removesuffix("_ablation")  # the same stage over the ablation matrix
            steps[stage.cmd] = {"stage": name, "outputs": outs, "persist": persist}
    return steps


def test_snakemake_and_dvc_define_the_same_steps(tmp_path):
    workdir = copy_workflow(tmp_path / "wf", params_with_matrix(), git=True)
    smk, dvc_ = snakemake_steps(workdir), dvc_steps(workdir)
    assert set(smk) == set(dvc_), "the two workflows run different commands"
    # weights, download, parse, 3 x sample, 5 x train, 5 x evaluate, 3 x summarize, 2 reports
    assert len(smk) == 1 + 1 + 1 + 3 + 5 + 5 + 3 + 1 + 1
    for command, job in smk.items():
        stage = dvc_[command]
        assert job["rule"] == stage["stage"], command
        assert job["outputs"] == stage["outputs"], command
        for persist in stage["persist"]:  # resumable working state lives beside a declared output
            assert any(persist.rsplit("/", 1)[0] == out.rsplit("/", 1)[0] for out in job["outputs"]), persist


def test_snakemake_lint_has_no_findings_but_the_conda_recommendation(tmp_path):
    workdir = copy_workflow(tmp_path / "wf", tiny_params_dict())
    result = snakemake(workdir, "--lint", "text", check=False)
    findings = [line.strip() for line in (result.stdout + result.stderr).splitlines()
                if re.match(r"^\s+\* ", line)]
    # rules run the pip-installed `hcmi` of the project's environment (README set-up), not per-rule conda envs
    unexpected = [f for f in findings if not f.startswith("* Specify a conda environment or container")]
    output = result.stdout + result.stderr
    assert result.returncode == 0 or "Lints for rule" in output, output[-3000:]  # it ran and only linted
    assert not unexpected, "\n".join(unexpected)


def test_invalid_params_fail_before_any_job(tmp_path):
    params = tiny_params_dict()
    params["train"]["epochz"] = 3
    workdir = copy_workflow(tmp_path / "wf", params)
    result = snakemake(workdir, "-n", "--cores", "1", check=False)
    assert result.returncode != 0
    assert "epochz" in result.stdout + result.stderr
