"""The whole pipeline through the real dvc.yaml, at test size: every stage once and then nothing, exact re-runs after a
parameter or a code change, one seed = one number whether DVC or a hand runs a step, sharing a finished run through a
DVC remote (clone + pull, branch switches) without spurious Snakemake re-runs, and `dvc metrics`, `dvc plots` and an
experiment out of the box. The same through Snakemake: tests/test_pipeline_snakemake.py."""

import json
import re
from collections import Counter

import pytest

from conftest import QUICK_PRETRAINING, tiny_params_dict
from workflow_helpers import (EVALUATION_AND_REPORTS, LOSS_LINE, LOSS_LINE_EDITED, REPORTS, TRAINING_AND_AFTER,
                              assert_same_run, copy_workflow, dvc, edited, hcmi, nothing_to_do, planned_rules, run,
                              run_by_hand, write_params)

from hcmi.config import deep_merge

pytestmark = pytest.mark.slow

# tests/fixtures/tiny.yaml with short training and pretraining, and HCMI as the one trained model beside its ablation and
# the zero-shot row (one stage of each kind: the baseline's stages are the same matrix stages as HCMI's): these tests ask
# what DVC runs and records, not how well the models learn (tests/test_pipeline_snakemake.py asserts that, on the full
# tiny size, with every model)
SHORT = {**QUICK_PRETRAINING, "models": ["hcmi"], "train": {"epochs": 2}}
MODELS = ("hcmi", "hcmi-no-frame-word")  # the trained runs


def dvc_params() -> dict:
    return deep_merge(tiny_params_dict(), SHORT)


def stage_kinds(names) -> Counter:
    """How many stages of each kind (matrix values and the ablation suffix dropped): train@synthetic-hcmi-0 and
    train_ablation@synthetic-hcmi-no-frame-word-0 are two `train` stages."""
    return Counter(name.split("@")[0].removesuffix("_ablation") for name in names)


def changed_dvc_stages(workdir) -> Counter:
    """The stages that `dvc status` reports as changed, counted by kind."""
    return stage_kinds(json.loads(dvc(workdir, "status", "--json").stdout or "{}"))


def ran_dvc_stages(output: str) -> Counter:
    return stage_kinds(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def dvc_origin(tmp_path_factory):
    """A repository whose pipeline DVC ran (the models of tiny.yaml), committed, with its results pushed to a
    local-directory remote."""
    base = tmp_path_factory.mktemp("dvc")
    origin = copy_workflow(base / "origin", dvc_params(), git=True)
    first = dvc(origin, "repro")
    dvc(origin, "remote", "add", "-d", "store", str(base / "store"))
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "run the pipeline"], origin)
    dvc(origin, "push")
    return origin, first.stdout


def test_dvc_repro_runs_every_stage_once_and_then_nothing(dvc_origin):
    origin, first = dvc_origin
    assert "Running stage 'train@synthetic-hcmi-0'" in first
    assert "Running stage 'train_ablation@synthetic-hcmi-no-frame-word-0'" in first
    assert (origin / "data/reports/synthetic.html").exists()
    again = dvc(origin, "repro")
    assert "Running stage" not in again.stdout, again.stdout


def test_changing_a_training_parameter_reruns_every_training_run(dvc_origin):
    origin, _ = dvc_origin
    params = dvc_params()
    params["train"]["lr"] = 0.002
    write_params(origin, params)
    try:  # DVC reports the stages whose own dependencies changed: every training run, each counted
        assert changed_dvc_stages(origin) == Counter(train=len(MODELS))
    finally:
        write_params(origin, dvc_params())


def test_a_loss_edit_reruns_training_and_what_follows_and_nothing_else(dvc_origin, tmp_path):
    origin, _ = dvc_origin  # DVC in a pulled clone, so that the shared run stays as it is
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    dvc(clone, "pull")
    assert changed_dvc_stages(clone) == Counter()
    with edited(clone / "hcmi/losses.py", LOSS_LINE, LOSS_LINE_EDITED):
        assert changed_dvc_stages(clone) == Counter(train=len(MODELS))  # the stages whose own code changed, each
        ran = ran_dvc_stages(dvc(clone, "repro").stdout)
        # DVC also rebuilds each trained run's search index (Snakemake's `all` does not ask for it)
        assert set(ran) == TRAINING_AND_AFTER | {"index"}, ran
        assert ran["train"] == ran["evaluate"] == len(MODELS) and ran["index"] == 1, ran  # the ablation has no index
        assert changed_dvc_stages(clone) == Counter()


def test_a_report_edit_reruns_only_the_reports(dvc_origin):
    origin, _ = dvc_origin
    with edited(origin / "hcmi/report/tables.py", 'RECALL_COLUMNS = ["R1",', 'RECALL_COLUMNS = [ "R1",'):
        assert changed_dvc_stages(origin) == Counter(REPORTS)


def test_one_seed_gives_one_number_through_dvc_and_by_hand(dvc_origin, tmp_path):
    """The same steps with the same parameters give bit-identical weights and every metric whether DVC or a hand
    launches them, in a shell whose thread variables say otherwise: every model of the run."""
    origin, _ = dvc_origin
    by_hand = run_by_hand(tmp_path, origin, dvc_params(), MODELS)
    assert_same_run(origin, by_hand, dvc_params(), MODELS)


def test_a_pulled_clone_runs_nothing_on_either_branch_then_exactly_what_a_parameter_change_needs(dvc_origin, tmp_path):
    """A second branch with other results (DVC re-evaluated it); a clone pulls both and switches between them with
    `dvc pull` and `dvc checkout`: after `hcmi sync`, Snakemake has nothing to do on either, and a parameter change,
    with or without a sync, plans exactly the steps it affects."""
    origin, _ = dvc_origin
    run(["git", "checkout", "-q", "-b", "dsl-20"], origin)
    params = dvc_params()
    params["eval"]["dsl_temperature"] = 20.0
    write_params(origin, params)
    rerun = dvc(origin, "repro").stdout
    stages = set(re.findall(r"Running stage '([a-z_]+)", rerun))
    assert {s.removesuffix("_ablation").removesuffix("_zero_shot") for s in stages} == EVALUATION_AND_REPORTS, rerun
    run(["git", "commit", "-qam", "DSL at temperature 20"], origin)
    dvc(origin, "push")
    diff = dvc(origin, "metrics", "diff", "main", "dsl-20").stdout
    assert "t2v_dsl." in diff and "provenance" not in diff, diff  # the numbers that moved, a line each
    run(["git", "checkout", "-q", "main"], origin)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    for branch, fetch in (("main", "pull"), ("dsl-20", "pull"), ("main", "checkout")):
        run(["git", "checkout", "-q", branch], clone)
        dvc(clone, fetch)
        hcmi(clone, "sync")
        assert nothing_to_do(clone), branch
        if (branch, fetch) == ("main", "pull"):  # an evaluation parameter edited in the pulled clone: Snakemake alone
            top_k = dvc_params()
            top_k["eval"]["top_k"] = 7
            write_params(clone, top_k)
            assert set(planned_rules(clone, "all")) == EVALUATION_AND_REPORTS
            run(["git", "checkout", "-q", "--", "params.yaml"], clone)
    # a change that DVC sees (params edited, nothing re-run yet) is handed to Snakemake to re-run
    write_params(clone, params)
    hcmi(clone, "sync")
    assert set(planned_rules(clone, "all")) == EVALUATION_AND_REPORTS


def test_dvc_metrics_plots_and_an_experiment_work_out_of_the_box(dvc_origin):
    origin, _ = dvc_origin
    run(["git", "checkout", "-q", "main"], origin)
    dvc(origin, "checkout")
    shown = dvc(origin, "metrics", "show").stdout
    assert "t2v.R1" in shown and "data/results/synthetic/hcmi/scores.json" in shown
    assert "data/results/synthetic/hcmi/seeds/0/scores.json" in shown and "spread.json" in shown
    assert "provenance" not in shown and "environment" not in shown and "levels" not in shown
    widest = max(len(line) for line in shown.splitlines())
    assert widest < 300, f"dvc metrics show is {widest} characters wide"
    [workspace] = json.loads(dvc(origin, "metrics", "show", "--json").stdout).values()
    files = workspace["data"]
    # HCMI, its ablation and the zero-shot row, one seed each: per run scores, per model scores and spread
    assert len(files) == 3 + 3 * 2, sorted(files)
    assert all("provenance" not in json.dumps(content) for content in files.values())
    dvc(origin, "plots", "show", "-o", "plots")
    assert (origin / "plots/index.html").stat().st_size > 0
    # an experiment on one stage (the whole pipeline's re-runs are the tests above): the parameter set, the stage run
    ran = ran_dvc_stages(dvc(origin, "exp", "run", "-S", "eval.top_k=5", "evaluate@synthetic-hcmi-0").stdout)
    assert ran == Counter(evaluate=1), ran
    table = json.loads(dvc(origin, "exp", "show", "--json").stdout)
    experiments = [exp for commit in table for exp in (commit.get("experiments") or [])]
    values = [exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["eval"]["top_k"] for exp in experiments]
    assert 5 in values, table
