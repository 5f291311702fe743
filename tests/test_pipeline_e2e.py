"""The whole pipeline through the real Snakefile and dvc.yaml, at test size (tests/fixtures/tiny.yaml)."""

import json
import re

import pytest

from conftest import tiny_params_dict
from workflow_helpers import copy_workflow, dvc, planned_rules, run, snakemake, write_params

pytestmark = pytest.mark.slow


def metrics_of(workdir, model):
    return json.loads((workdir / f"data/results/synthetic/{model}/metrics.json").read_text())


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("smk") / "repo", tiny_params_dict())
    snakemake(workdir, "--cores", "2", "all")
    return workdir


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
    result = snakemake(snakemake_run, "-n", "--cores", "2", "all")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_an_evaluation_parameter_reruns_only_evaluation_and_reports(snakemake_run, tmp_path):
    params = tiny_params_dict()
    params["eval"]["top_k"] = 7
    workdir = snakemake_run
    write_params(workdir, params)
    rules = planned_rules(workdir, "all")
    assert set(rules) == {"evaluate", "summarize", "dataset_report", "index_report"}, rules
    assert rules.count("evaluate") == 3
    model_file = workdir / "data/checkpoints/synthetic/hcmi/seeds/0/model.pt"
    before = model_file.stat().st_mtime_ns
    snakemake(workdir, "--cores", "2", "all")
    assert model_file.stat().st_mtime_ns == before, "training did not re-run"
    assert len(json.loads(json.dumps(metrics_of(workdir, "hcmi")))["per_seed"]) == 1


def test_dvc_repro_reaches_the_same_metrics_and_then_runs_nothing(snakemake_run, tmp_path):
    workdir = copy_workflow(tmp_path / "repo", tiny_params_dict(), git=True)
    result = dvc(workdir, "repro")
    assert "Running stage 'train@synthetic-hcmi-0'" in result.stdout
    for model in ("baseline", "hcmi", "hcmi-no-frame-word"):
        assert metrics_of(workdir, model)["mean"]["t2v"] == pytest.approx(metrics_of(snakemake_run, model)["mean"]["t2v"])
    assert (workdir / "data/reports/synthetic.html").exists()
    again = dvc(workdir, "repro")
    assert "Running stage" not in again.stdout, again.stdout
    # an evaluation parameter re-runs evaluation, summaries and reports only
    params = tiny_params_dict()
    params["eval"]["top_k"] = 7
    write_params(workdir, params)
    changed = dvc(workdir, "repro").stdout
    stages = sorted(set(re.findall(r"Running stage '([a-z_]+)@?", changed)))
    assert stages == ["dataset_report", "evaluate", "evaluate_ablation", "index_report", "summarize",
                      "summarize_ablation"], changed
