"""Every step is declared once (hcmi/pipeline.py) and both workflows follow from it: the committed Snakemake rules
(workflow/rules/steps.smk) and dvc.yaml are the generated ones, and Snakemake and DVC run the same commands with the
same outputs, parameters and dependencies."""

import re

import pytest

from hcmi import pipeline
from hcmi.steps import workflow_files

from conftest import REPO, tiny_params_dict
from workflow_helpers import copy_workflow, planned_jobs, snakemake


def params_with_matrix() -> dict:
    params = tiny_params_dict()
    params["models"] = ["baseline", "hcmi"]
    params["seeds"] = [0, 1]
    params["ablations"] = ["hcmi-no-enhance"]
    params["ablation_seeds"] = [3]
    return params


@pytest.mark.parametrize("name", list(workflow_files.FILES))
def test_the_committed_workflow_files_are_generated_from_the_step_table(name):
    assert (REPO / name).read_text() == workflow_files.FILES[name](), \
        "run `hcmi workflow-files` after editing hcmi/pipeline.py"


def test_a_stale_workflow_file_is_named_and_rewritten(tmp_path):
    for name in workflow_files.FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(workflow_files.FILES[name]())
    rules = tmp_path / "workflow/rules/steps.smk"
    rules.write_text(rules.read_text().replace("rule train:", "rule training:"))
    with pytest.raises(workflow_files.WorkflowFilesDiffer, match="workflow/rules/steps.smk"):
        workflow_files.run(tmp_path, check=True)
    assert workflow_files.run(tmp_path) == ["workflow/rules/steps.smk"]
    workflow_files.run(tmp_path, check=True)


def test_every_rule_reads_as_text():
    """A reader greps `rule train:` and finds its named inputs and outputs, log, threads and resources."""
    text = (REPO / "workflow/rules/steps.smk").read_text()
    for step in pipeline.STEPS:
        rule = re.search(rf"^rule {step.name}:\n(.*?)(?=^rule |\Z)", text, re.M | re.S)
        assert rule, step.name
        body = rule.group(1)
        for name, path in {**step.inputs, **step.outputs, **step.metrics}.items():
            assert re.search(rf"^\s+{name}=[^=]*?{re.escape(path)}", body, re.M), (step.name, name)
        assert f'"{step.log}",' in body and "shell:" in body
    assert "threads: param(\"compute.train_threads\")" in text and "mem_mb=param(\"compute.train_mem_mb\")" in text


def snakemake_steps(workdir, params):
    """Every job of `all`, and of the steps `all` does not need (the search indexes)."""
    indexes = [f"data/index/synthetic/{model}/seeds/{seed}/index.json" for model in params["models"]
               for seed in params["seeds"]]
    steps = {}
    for job in planned_jobs(workdir, "--forceall", "all", *indexes):
        command = re.sub(r"\s*>\s*\S+\s+2>&1\s*$", "", job["command"])  # the rule's log redirection
        steps[command] = {"rule": job["rule"], "outputs": set(job["outputs"]), "inputs": set(job["inputs"])}
    return steps


def dvc_steps(workdir):
    from dvc.repo import Repo

    steps = {}
    with Repo(str(workdir)) as repo:
        for stage in repo.index.stages:
            outs = {out.def_path for out in stage.outs if not out.persist}
            persist = {out.def_path for out in stage.outs if out.persist}
            params = {key for dep in stage.deps if hasattr(dep, "params") for key in dep.params}
            deps = {dep.def_path for dep in stage.deps if not hasattr(dep, "params")}
            # the same stage over the ablation and zero-shot matrices
            name = stage.name.split("@")[0].removesuffix("_ablation").removesuffix("_zero_shot")
            steps[stage.cmd] = {"stage": name, "outputs": outs, "persist": persist, "params": params, "deps": deps}
    return steps


def job_values(rule, command):
    """The wildcard values of a job, read back from its command (`--dataset synthetic --model hcmi ...`)."""
    values = dict(re.findall(r"--(\w+) (\S+)", command))
    return {w: values[w] for w in pipeline.STEP[rule].wildcards}


def test_snakemake_and_dvc_define_the_same_steps(tmp_path):
    params = params_with_matrix()
    workdir = copy_workflow(tmp_path / "wf", params, git=True)
    smk, dvc_ = snakemake_steps(workdir, params), dvc_steps(workdir)
    assert set(smk) == set(dvc_), "the two workflows run different commands"
    # weights, download, parse, 3 x sample, 5 x train, the zero-shot snapshot, 6 x evaluate, 4 x index,
    # 4 x summarize, 2 reports
    assert len(smk) == 1 + 1 + 1 + 3 + 5 + 1 + 6 + 4 + 4 + 1 + 1
    for command, job in smk.items():
        stage = dvc_[command]
        step = pipeline.STEP[job["rule"]]
        assert job["rule"] == stage["stage"], command
        assert job["outputs"] == stage["outputs"], command
        for persist in stage["persist"]:  # resumable working state lives beside a declared output
            assert any(persist.rsplit("/", 1)[0] == out.rsplit("/", 1)[0] for out in job["outputs"]), persist
        # the same parameters: the keys the step declares, for this job's values
        assert stage["params"] == set(step.declared_params(**job_values(job["rule"], command))), command
        # the same code: DVC depends on the step's code files, Snakemake on their hash (a rule param)
        code = set(pipeline.code_files(step))
        assert code <= stage["deps"], command
        # the same data: every Snakemake input is a DVC dependency or lies inside one
        data = stage["deps"] - code
        for path in job["inputs"]:
            assert any(path == dep or path.startswith(dep + "/") for dep in data), (command, path)
        # and every other DVC dependency is resumable working state the step reads (never declared to Snakemake)
        state = {path.format(**job_values(job["rule"], command)) for path in step.state_inputs}
        for dep in data:
            assert dep in state or any(path == dep or path.startswith(dep + "/") for path in job["inputs"]), dep


def test_every_step_has_its_own_code_and_the_layers_show_in_it():
    code = {step.name: set(pipeline.code_files(step)) for step in pipeline.STEPS}
    assert "hcmi/losses.py" in code["train"] and "hcmi/losses.py" not in code["evaluate"]
    assert not any(path.startswith("hcmi/model/") for step in ("download", "parse", "sample") for path in code[step]), \
        "sampling and downloads never run model code"
    assert "hcmi/report/tables.py" in code["dataset_report"] and "notebooks/report.ipynb" in code[
        "dataset_report"]
    assert not any(path.startswith(("hcmi/report/", "notebooks/")) for path in code["train"] | code["evaluate"])
    assert "hcmi/model/configs/hcmi-tiny.json" in code["train"], "data folders beside a module are its code"
    assert "hcmi/cli.py" not in set().union(*code.values()), "the command line only parses arguments"


def test_a_head_edit_changes_the_code_of_only_the_variants_that_use_it():
    """hcmi/model/hcmi.py is HCMI's code, not the baseline's: editing it re-trains HCMI and its ablations only."""
    train = pipeline.STEP["train"]
    hcmi_code, baseline_code = set(pipeline.code_files(train, "hcmi")), set(pipeline.code_files(train, "meanp"))
    assert "hcmi/model/hcmi.py" in hcmi_code and "hcmi/model/hcmi.py" not in baseline_code
    assert "hcmi/model/baseline.py" in baseline_code and "hcmi/model/baseline.py" not in hcmi_code
    assert set(pipeline.code_files(train)) == hcmi_code | baseline_code  # DVC's stages, over a whole model group
    assert pipeline.code_hash(train, "hcmi") != pipeline.code_hash(train, "meanp")
    weights = set(pipeline.code_files(pipeline.STEP["weights"]))  # the backbone only: no head is its code
    assert "hcmi/model/backbone.py" in weights and not {"hcmi/model/hcmi.py", "hcmi/model/baseline.py"} & weights


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


@pytest.mark.parametrize("setting, key", [('train={"epochz": 3}', "train.epochz"), ("trian=3", "trian")])
def test_invalid_params_fail_before_any_job_in_one_clear_message(tmp_path, setting, key):
    workdir = copy_workflow(tmp_path / "wf", tiny_params_dict())
    result = snakemake(workdir, "-n", "--cores", "1", "--config", setting, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"unknown key '{key}'" in output
    assert output.count("\n") < 40, "one clear message, not a schema dump"


def test_a_zero_shot_variant_is_evaluated_and_never_trained(tmp_path):
    params = tiny_params_dict()
    params["zero_shot"] = ["zero-shot"]
    workdir = copy_workflow(tmp_path / "wf", params)
    jobs = planned_jobs(workdir, "--forceall", "all")
    for_zero_shot = sorted(job["rule"] for job in jobs if "/zero-shot/" in " ".join(job["outputs"]))
    assert for_zero_shot == ["evaluate", "snapshot", "summarize"], for_zero_shot
    [snapshot] = [job for job in jobs if job["rule"] == "snapshot"]
    assert snapshot["outputs"][0] == "data/checkpoints/synthetic/zero-shot/seeds/0/model.pt"
    assert not any(job["rule"] == "train" and "zero-shot" in job["command"] for job in jobs)


def _commands(jobs):
    return {re.sub(r"\s*>\s*\S+\s+2>&1\s*$", "", job["command"]): job for job in jobs if job["command"] and job["rule"] != "mechanisms"}


def test_dvc_and_snakemake_run_the_same_mechanism_checks_and_only_theirs(tmp_path):
    """mechanisms/dvc.yaml holds exactly the jobs that `snakemake mechanisms` adds to `all` (shipped params), with
    the same outputs; the levels at the default are the default run's own jobs."""
    import shutil

    import yaml
    from dvc.repo import Repo

    workdir = copy_workflow(tmp_path / "wf", yaml.safe_load((REPO / "params.yaml").read_text()), git=True)
    shutil.copytree(REPO / "mechanisms", workdir / "mechanisms")
    everything = _commands(planned_jobs(workdir, "--forceall", "all"))
    checks = _commands(planned_jobs(workdir, "--forceall", "mechanisms"))
    new = {command: job for command, job in checks.items() if command not in everything}
    trained = sorted(re.search(r"--dataset (\S+) --model (\S+) --seed", c).groups() for c in new
                     if c.startswith("hcmi train"))
    # denoising and enhancement: two derived benchmarks each, both variants, 3 seeds; length: 2 levels x 2 variants
    expected = sorted([(f"synthetic--{check}-{level}", model) for check, levels, models in (
        ("denoise", ("0", "0p5"), ("hcmi", "hcmi-no-denoise")), ("enhance", ("0", "0p9"), ("hcmi", "hcmi-no-enhance")))
        for level in levels for model in models] * 3
        + [("synthetic", f"{model}--length-{epochs}") for epochs in (6, 12) for model in ("hcmi", "baseline")] * 3)
    assert trained == expected
    rules = sorted(job["rule"] for job in new.values())
    assert {rule: rules.count(rule) for rule in set(rules)} == {
        "download": 4, "parse": 4, "sample": 12, "train": 36, "evaluate": 36, "summarize": 12,
        "mechanisms_report": 1}
    # every default-level comparison reads the default run's models: the same jobs as `all`'s
    for model in ("hcmi", "hcmi-no-denoise", "hcmi-no-enhance", "baseline"):
        assert f"hcmi train --dataset synthetic --model {model} --seed 2" in checks
    with Repo(str(workdir)) as repo:
        stages = [stage for stage in repo.index.stages if stage.path_in_repo.startswith("mechanisms")]
        staged = {stage.cmd: {out.def_path for out in stage.outs if not out.persist} for stage in stages}
        watched = {stage.cmd: {key for dep in stage.deps if hasattr(dep, "params") for key in dep.params}
                   for stage in stages}
    assert set(staged) == set(new), set(staged) ^ set(new)
    for command, outputs in staged.items():
        assert outputs == set(new[command]["outputs"]), command
    # a derived entry is not in params.yaml: its stage watches the base entry and the check
    longer = watched["hcmi train --dataset synthetic --model hcmi--length-12 --seed 0"]
    assert {"train", "variants.hcmi", "checks.length"} <= longer and not any("--" in key for key in longer)
    generated = watched["hcmi download --dataset synthetic--denoise-0p5"]
    assert generated == {"data.synthetic.source", "checks.denoise"}
