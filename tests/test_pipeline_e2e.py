"""The whole pipeline through the real Snakefile and dvc.yaml, at test size (tests/fixtures/tiny.yaml): outputs,
no-op re-runs, exact re-runs after a parameter change, and sharing a finished run through a DVC remote (clone + pull,
branch switches) without spurious Snakemake re-runs."""

import json
import re
import shutil

import pytest
import yaml

from conftest import REPO, tiny_params_dict
from workflow_helpers import copy_workflow, dvc, planned_rules, run, snakemake, write_params

pytestmark = pytest.mark.slow

EVALUATION_AND_REPORTS = {"evaluate", "summarize", "dataset_report", "index_report"}


def metrics_of(workdir, model):
    return json.loads((workdir / f"data/results/synthetic/{model}/metrics.json").read_text())


def hcmi(workdir, *args):
    return run(["hcmi", *args], workdir)


def nothing_to_do(workdir, *args) -> bool:
    result = snakemake(workdir, "-n", "--cores", "1", "all", *args)
    return "Nothing to be done" in result.stdout + result.stderr


# the Snakemake run keeps the shipped params.yaml and shrinks it with Snakemake's own override mechanism
TINY = ("--configfile", "tiny.yaml")


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("smk") / "repo", yaml.safe_load((REPO / "params.yaml").read_text()))
    shutil.copy2(REPO / "tests/fixtures/tiny.yaml", workdir / "tiny.yaml")
    snakemake(workdir, "--cores", "2", "all", *TINY)
    return workdir


def dvc_params():
    params = tiny_params_dict()
    params["models"], params["ablations"] = ["baseline"], []  # the full matrix is exercised by the Snakemake run
    return params


@pytest.fixture(scope="module")
def dvc_origin(tmp_path_factory):
    """A repository whose pipeline DVC ran, committed, with its results pushed to a local-directory remote."""
    base = tmp_path_factory.mktemp("dvc")
    origin = copy_workflow(base / "origin", dvc_params(), git=True)
    first = dvc(origin, "repro")
    dvc(origin, "remote", "add", "-d", "store", str(base / "store"))
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "run the pipeline"], origin)
    dvc(origin, "push")
    return origin, first.stdout


def test_snakemake_all_writes_reports_and_metrics(snakemake_run):
    workdir = snakemake_run
    for path in ["data/reports/synthetic.html", "data/reports/index.html", "data/reports/synthetic.ipynb"]:
        assert (workdir / path).stat().st_size > 0, path
    html = (workdir / "data/reports/synthetic.html").read_text()
    assert html.count("data:image/png;base64") >= 3, "loss curves, recall bars and retrieval examples are embedded"
    assert "Hard distractors" in html and "hcmi-no-frame-word" in html
    assert "results = reporting.DatasetResults" not in html, "code cells are hidden"
    index = (workdir / "data/reports/index.html").read_text()
    assert "synthetic" in index and "baseline" in index
    for model in ("baseline", "hcmi", "hcmi-no-frame-word"):
        summary = metrics_of(workdir, model)
        counts = summary["per_seed"]["0"]["counts"]
        assert counts == {"videos": 16, "captions": 16, "skipped_videos": 0, "dropped_captions": 0}
        assert 0 <= summary["mean"]["t2v"]["R1"] <= 100
    for log in ["logs/train/synthetic-hcmi-0.log", "logs/sample/synthetic-train.log"]:
        assert (workdir / log).stat().st_size > 0, "every rule logs to its log file"


def test_second_snakemake_run_does_nothing(snakemake_run):
    assert nothing_to_do(snakemake_run, *TINY)


def test_changing_an_evaluation_parameter_reruns_only_evaluation_and_reports(snakemake_run):
    workdir = snakemake_run
    (workdir / "top7.yaml").write_text("eval: {top_k: 7}\n")
    rules = planned_rules(workdir, "all", *TINY, "top7.yaml")
    assert set(rules) == EVALUATION_AND_REPORTS, rules
    assert rules.count("evaluate") == 3  # every trained run is re-evaluated, none is re-trained


def test_dvc_repro_reaches_the_same_metrics_and_then_runs_nothing(snakemake_run, dvc_origin):
    origin, first = dvc_origin
    assert "Running stage 'train@synthetic-baseline-0'" in first
    assert metrics_of(origin, "baseline")["mean"]["t2v"] == pytest.approx(
        metrics_of(snakemake_run, "baseline")["mean"]["t2v"])
    assert (origin / "data/reports/synthetic.html").exists()
    again = dvc(origin, "repro")
    assert "Running stage" not in again.stdout, again.stdout


def test_a_pulled_clone_runs_nothing_then_exactly_what_a_parameter_change_needs(dvc_origin, tmp_path):
    origin, _ = dvc_origin
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    dvc(clone, "pull")
    hcmi(clone, "sync")
    assert nothing_to_do(clone)
    params = dvc_params()
    params["eval"]["top_k"] = 7
    write_params(clone, params)
    assert set(planned_rules(clone, "all")) == EVALUATION_AND_REPORTS


def test_switching_branches_with_dvc_checkout_runs_nothing_on_either(dvc_origin, tmp_path):
    origin, _ = dvc_origin
    run(["git", "checkout", "-q", "-b", "dsl-20"], origin)
    params = dvc_params()
    params["eval"]["dsl_temperature"] = 20.0
    write_params(origin, params)
    rerun = dvc(origin, "repro").stdout
    stages = set(re.findall(r"Running stage '([a-z_]+)", rerun))
    assert stages == EVALUATION_AND_REPORTS, rerun
    run(["git", "commit", "-qam", "DSL at temperature 20"], origin)
    dvc(origin, "push")
    diff = dvc(origin, "metrics", "diff", "main", "dsl-20").stdout
    assert "t2v_dsl.R1" in diff or "t2v_dsl.MnR" in diff, diff
    run(["git", "checkout", "-q", "main"], origin)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    for branch, fetch in (("main", "pull"), ("dsl-20", "pull"), ("main", "checkout")):
        run(["git", "checkout", "-q", branch], clone)
        dvc(clone, fetch)
        hcmi(clone, "sync")
        assert nothing_to_do(clone), branch
    # a change that DVC sees (params edited, nothing re-run yet) is handed to Snakemake to re-run
    write_params(clone, params)
    hcmi(clone, "sync")
    assert set(planned_rules(clone, "all")) == EVALUATION_AND_REPORTS


def test_dvc_metrics_plots_and_an_experiment_work_out_of_the_box(dvc_origin):
    origin, _ = dvc_origin
    run(["git", "checkout", "-q", "main"], origin)
    dvc(origin, "checkout")
    shown = dvc(origin, "metrics", "show").stdout
    assert "t2v.R1" in shown and "data/results/synthetic/baseline/metrics.json" in shown
    dvc(origin, "plots", "show", "-o", "plots")
    assert (origin / "plots/index.html").stat().st_size > 0
    dvc(origin, "exp", "run", "-S", "eval.top_k=5")
    table = json.loads(dvc(origin, "exp", "show", "--json").stdout)
    experiments = [exp for commit in table for exp in (commit.get("experiments") or [])]
    values = [exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["eval"]["top_k"] for exp in experiments]
    assert 5 in values, table
