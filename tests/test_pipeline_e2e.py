"""The whole pipeline through the real Snakefile and dvc.yaml, at test size (tests/fixtures/tiny.yaml): outputs and
their provenance, no-op re-runs, exact re-runs after a parameter or a code change in both tools, one seed = one
number whichever tool (or hand) runs a step, checkpoint verification, and sharing a finished run through a DVC remote
(clone + pull, branch switches) without spurious Snakemake re-runs."""

import json
import re
import shutil
from collections import Counter
from contextlib import contextmanager

import pytest
import torch
import yaml

from conftest import REPO, tiny_params_dict
from workflow_helpers import copy_workflow, dvc, planned_jobs, planned_rules, run, snakemake, write_params

from hcmi import checkpoints

pytestmark = pytest.mark.slow

EVALUATION_AND_REPORTS = {"evaluate", "summarize", "dataset_report", "index_report"}
TRAINING_AND_AFTER = {"train"} | EVALUATION_AND_REPORTS
REPORTS = {"dataset_report", "index_report"}
MODELS = ("baseline", "hcmi", "hcmi-no-frame-word")  # tests/fixtures/tiny.yaml: models and the ablation
NOT_METRICS = {"run", "provenance", "model_provenance"}  # what made a result, not the result


def metrics_of(workdir, model, seed=None):
    path = f"data/results/synthetic/{model}/" + (f"seeds/{seed}/metrics.json" if seed is not None else "metrics.json")
    return json.loads((workdir / path).read_text())


def model_of(workdir, model, seed=0):
    return checkpoints.load(workdir / f"data/checkpoints/synthetic/{model}/seeds/{seed}/model.pt")


# Learning, asserted where it is reliable at test size: retrieval of the training captions among the training videos by
# the run's last weights (at 48 videos the held-out split is chance for these tiny models, and the weights kept are the
# best of a validation on 8 videos, which can be an early epoch). A scorer that has learned nothing ranks each query's
# video uniformly (ties count against it): the mean rank over Q queries among N videos is then (N + 1) / 2 with a spread
# of sqrt((N^2 - 1) / (12 Q)). The runs reach 16 such spreads below chance; 8 leaves a random scorer odds under 1e-15.
LEARNED_Z = 8


def training_retrieval(workdir, model, seed=0) -> tuple[float, float, float]:
    """(mean rank of each training caption's video, its chance value, its spread under chance) for the last weights."""
    import math

    from hcmi import metrics
    from hcmi.data.annotations import read_annotations
    from hcmi.data.frames import FrameCache
    from hcmi.data.splits import RetrievalSplit
    from hcmi.model.backbone import tokenizer
    from hcmi.scoring import score_split
    from hcmi.steps.evaluate import load_model

    run = workdir / f"data/checkpoints/synthetic/{model}/seeds/{seed}"
    network, checkpoint = load_model(run / "model.pt", torch.device("cpu"))
    network.load_state_dict(checkpoints.load(run / "state/last.pt")["model"])
    cache = FrameCache(workdir / "data/frames/synthetic/train")
    split = RetrievalSplit(read_annotations(workdir / "data/raw/synthetic/annotations.parquet", "synthetic"), cache,
                           "train")
    tokenize = tokenizer(checkpoint["backbone"]["name"], checkpoint["max_words"])
    _, final = score_split(network, split, cache, tokenize, 16, 64, torch.device("cpu"))
    ranks = metrics.text_to_video_ranks(final, split.text_video)
    videos, queries = final.shape[1], len(ranks)
    assert videos >= 40 and queries >= 80, (videos, queries)
    return float(ranks.mean()), (videos + 1) / 2, math.sqrt((videos**2 - 1) / (12 * queries))


def hcmi(workdir, *args, check=True):
    return run(["hcmi", *args], workdir, check=check)


def nothing_to_do(workdir, *args) -> bool:
    result = snakemake(workdir, "-n", "--cores", "1", "all", *args)
    return "Nothing to be done" in result.stdout + result.stderr


def stage_kinds(names) -> Counter:
    """How many stages of each kind (matrix values and the ablation suffix dropped): train@synthetic-hcmi-0 and
    train_ablation@synthetic-hcmi-no-frame-word-0 are two `train` stages."""
    return Counter(name.split("@")[0].removesuffix("_ablation") for name in names)


def changed_dvc_stages(workdir) -> Counter:
    """The stages that `dvc status` reports as changed, counted by kind."""
    return stage_kinds(json.loads(dvc(workdir, "status", "--json").stdout or "{}"))


def ran_dvc_stages(output: str) -> Counter:
    return stage_kinds(re.findall(r"Running stage '([^']+)'", output))


@contextmanager
def edited(path, old, new):
    """A source file with one edit, restored afterwards."""
    original = path.read_text()
    assert old in original, f"{old!r} not in {path}"
    path.write_text(original.replace(old, new, 1))
    try:
        yield
    finally:
        path.write_text(original)


LOSS_LINE = "return LossResult(total, parts, stats, latent)"
LOSS_LINE_EDITED = "return LossResult(total * 1.0, parts, stats, latent)"  # a code change that computes the same

# the Snakemake run keeps the shipped params.yaml and shrinks it with Snakemake's own override mechanism
TINY = ("--configfile", "tiny.yaml")


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("smk") / "repo", yaml.safe_load((REPO / "params.yaml").read_text()))
    shutil.copy2(REPO / "tests/fixtures/tiny.yaml", workdir / "tiny.yaml")
    snakemake(workdir, "--cores", "2", "all", *TINY)
    return workdir


@pytest.fixture(scope="module")
def dvc_origin(tmp_path_factory):
    """A repository whose pipeline DVC ran (the same models as the Snakemake run), committed, with its results
    pushed to a local-directory remote."""
    base = tmp_path_factory.mktemp("dvc")
    origin = copy_workflow(base / "origin", tiny_params_dict(), git=True)
    first = dvc(origin, "repro")
    dvc(origin, "remote", "add", "-d", "store", str(base / "store"))
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "run the pipeline"], origin)
    dvc(origin, "push")
    return origin, first.stdout


def test_snakemake_all_writes_reports_and_the_models_learn(snakemake_run):
    workdir = snakemake_run
    for path in ["data/reports/synthetic.html", "data/reports/index.html", "data/reports/synthetic.ipynb",
                 "data/reports/results.md"]:
        assert (workdir / path).stat().st_size > 0, path
    html = (workdir / "data/reports/synthetic.html").read_text()
    assert html.count("data:image/png;base64") >= 3, "loss curves, recall bars and retrieval examples are embedded"
    assert "Hard distractors" in html and "hcmi-no-frame-word" in html and "Provenance" in html
    assert "Against the published figures" not in html, "nobody published figures for the synthetic benchmark"
    assert "results = tables.DatasetResults" not in html, "code cells are hidden"
    assert "Paired comparisons" in html and "removed component" in html
    index = (workdir / "data/reports/index.html").read_text()
    assert "synthetic" in index and "baseline" in index
    assert "Paired comparisons" in index and "data:image/png;base64" in index, "the comparisons, drawn"
    results = (workdir / "data/reports/results.md").read_text()
    assert "| synthetic | hcmi vs baseline | t2v R@1 |" in results
    assert "| synthetic | hcmi vs hcmi-no-frame-word (the removed component) | hard pairs: order |" in results
    for model in MODELS:
        summary = metrics_of(workdir, model)
        counts = summary["per_seed"]["0"]["counts"]
        assert counts == {"videos": 16, "captions": 16, "skipped_videos": 0, "dropped_captions": 0, "galleries": 1,
                          "gallery_videos": [16]}
    for model in ("baseline", "hcmi"):  # the compared models learn
        mean_rank, chance, spread = training_retrieval(workdir, model)
        assert chance - mean_rank >= LEARNED_Z * spread, (model, mean_rank, chance, spread)
    for log in ["logs/train/synthetic-hcmi-0.log", "logs/sample/synthetic-train.log"]:
        assert (workdir / log).stat().st_size > 0, "every rule logs to its log file"


def provenance_of(workdir, model, seed=None):
    path = f"data/results/synthetic/{model}/" + (f"seeds/{seed}/" if seed is not None else "") + "provenance.json"
    return json.loads((workdir / path).read_text())


def test_every_result_records_what_made_it(snakemake_run):
    result = provenance_of(snakemake_run, "hcmi", 0)
    for record in (result["provenance"], result["model_provenance"], model_of(snakemake_run, "hcmi")["provenance"]):
        assert set(record) == {"code", "params", "data", "environment", "runtime"}
        assert {"git_commit", "git_dirty", "package_sha256", "step_code_sha256"} <= set(record["code"])
        assert len(record["params"]["sha256"]) == 64 and record["params"]["keys"]
        assert all(record["data"].values()), record["data"]
        assert {"torch", "open_clip_torch", "decord", "numpy"} <= set(record["environment"]["libraries"])
        assert record["runtime"]["threads"] == 1 and record["runtime"]["device"] == "cpu"
        assert record["runtime"]["wall_time_s"] > 0
    assert set(result["provenance"]["params"]["keys"]) >= {"eval", "compute.train_threads"}
    assert "train" in result["model_provenance"]["params"]["keys"]
    summary = provenance_of(snakemake_run, "hcmi")
    assert summary["per_seed"]["0"] == result and set(summary["provenance"]) >= {"code", "params", "data"}
    assert not NOT_METRICS & set(metrics_of(snakemake_run, "hcmi", 0)) - {"run"}, "the numbers alone"


def test_after_all_the_mechanism_checks_plan_exactly_their_new_runs(snakemake_run):
    """`snakemake -n mechanisms` after `all`: the runs the checks compare that `all` did not make, nothing else (at
    test size: one seed, the ablations of tiny.yaml, 20 epochs, so every length level is a new one)."""
    jobs = planned_jobs(snakemake_run, "mechanisms", *TINY)
    trained = sorted(tuple(re.search(r"--dataset (\S+) --model (\S+) --seed (\d+)", job["command"]).groups())
                     for job in jobs if job["rule"] == "train")
    expected = sorted(
        [(f"synthetic--{check}-{level}", model, "0") for check, levels, models in (
            ("denoise", ("0", "0p5"), ("hcmi", "hcmi-no-denoise")), ("enhance", ("0", "0p9"),
                                                                     ("hcmi", "hcmi-no-enhance")))
         for level in levels for model in models]
        + [("synthetic", "hcmi-no-denoise", "0"), ("synthetic", "hcmi-no-enhance", "0")]  # default levels, not in all
        + [("synthetic", f"{model}--length-{epochs}", "0") for epochs in (3, 6, 12) for model in ("hcmi", "baseline")])
    assert trained == expected
    data_jobs = [job["command"] for job in jobs if job["rule"] in ("download", "parse", "sample")]
    assert data_jobs and all("--dataset synthetic--" in command for command in data_jobs), data_jobs
    assert not any(job["rule"] == "weights" for job in jobs)
    assert sorted({job["rule"] for job in jobs} - {"mechanisms"}) == [
        "download", "evaluate", "mechanisms_report", "parse", "sample", "summarize", "train"]


def test_second_snakemake_run_does_nothing(snakemake_run):
    assert nothing_to_do(snakemake_run, *TINY)


def test_changing_an_evaluation_parameter_reruns_only_evaluation_and_reports(snakemake_run):
    workdir = snakemake_run
    (workdir / "top7.yaml").write_text("eval: {top_k: 7}\n")
    rules = planned_rules(workdir, "all", *TINY, "top7.yaml")
    assert set(rules) == EVALUATION_AND_REPORTS, rules
    assert rules.count("evaluate") == 4  # every trained run and the zero-shot one is re-evaluated, none re-trained


def test_cutting_the_test_split_into_galleries_reruns_only_evaluation_and_reports(snakemake_run):
    workdir = snakemake_run
    (workdir / "galleries.yaml").write_text("data: {synthetic: {test_folds: 2}}\n")
    rules = planned_rules(workdir, "all", *TINY, "galleries.yaml")
    assert set(rules) == EVALUATION_AND_REPORTS and rules.count("evaluate") == 4, rules


def test_changing_a_training_parameter_reruns_training_and_what_follows_in_both_tools(snakemake_run, dvc_origin):
    workdir = snakemake_run
    (workdir / "lr.yaml").write_text("train: {lr: 0.002}\n")
    rules = planned_rules(workdir, "all", *TINY, "lr.yaml")
    assert set(rules) == TRAINING_AND_AFTER and rules.count("train") == 3, rules
    origin, _ = dvc_origin
    params = tiny_params_dict()
    params["train"]["lr"] = 0.002
    write_params(origin, params)
    try:  # DVC reports the stages whose own dependencies changed: every training run, each counted
        assert changed_dvc_stages(origin) == Counter(train=3)
    finally:
        write_params(origin, tiny_params_dict())


def test_a_loss_edit_reruns_training_and_what_follows_and_nothing_else(snakemake_run, dvc_origin, tmp_path):
    with edited(snakemake_run / "hcmi/losses.py", LOSS_LINE, LOSS_LINE_EDITED):
        rules = planned_rules(snakemake_run, "all", *TINY)
        assert set(rules) == TRAINING_AND_AFTER and rules.count("train") == 3, rules
    assert nothing_to_do(snakemake_run, *TINY)

    origin, _ = dvc_origin  # DVC in a pulled clone, so that the shared run stays as it is
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    dvc(clone, "pull")
    assert changed_dvc_stages(clone) == Counter()
    with edited(clone / "hcmi/losses.py", LOSS_LINE, LOSS_LINE_EDITED):
        assert changed_dvc_stages(clone) == Counter(train=3)  # the stages whose own code changed, one by one
        ran = ran_dvc_stages(dvc(clone, "repro").stdout)
        # DVC also rebuilds each trained run's search index (Snakemake's `all` does not ask for it)
        assert set(ran) == TRAINING_AND_AFTER | {"index"}, ran
        assert ran["train"] == ran["evaluate"] == 3 and ran["index"] == 2, ran  # the ablation has no index
        assert changed_dvc_stages(clone) == Counter()


def test_a_head_edit_retrains_only_the_variants_built_with_that_head(snakemake_run):
    """hcmi/model/hcmi.py is the code of HCMI and its ablation, not of the baseline nor of the zero-shot row."""
    head = snakemake_run / "hcmi/model/hcmi.py"
    first_line = head.read_text().splitlines()[0]
    with edited(head, first_line, first_line + "  "):
        jobs = planned_jobs(snakemake_run, "all", *TINY)
        trained = sorted(job["command"].split("--model ")[1].split()[0] for job in jobs if job["rule"] == "train")
        assert trained == ["hcmi", "hcmi-no-frame-word"], trained
        assert sum(job["rule"] == "evaluate" for job in jobs) == 2
    assert nothing_to_do(snakemake_run, *TINY)


def test_a_report_edit_reruns_only_the_reports(snakemake_run, dvc_origin):
    origin, _ = dvc_origin
    for workdir in (snakemake_run, origin):
        with edited(workdir / "hcmi/report/tables.py", 'RECALL_COLUMNS = ["R1",', 'RECALL_COLUMNS = [ "R1",'):
            if workdir is snakemake_run:
                assert set(planned_rules(workdir, "all", *TINY)) == REPORTS
            else:
                assert changed_dvc_stages(workdir) == Counter(REPORTS)


def test_one_seed_gives_one_number_through_dvc_snakemake_and_by_hand(snakemake_run, dvc_origin, tmp_path):
    """The same step with the same parameters gives bit-identical weights and every metric however it is launched.
    The run by hand gets a shell whose thread variables say otherwise (the test session's OMP_NUM_THREADS=1 removed,
    MKL's and OpenMP's set to 2): hcmi applies compute.train_threads itself."""
    origin, _ = dvc_origin
    by_hand = tmp_path / "by_hand"
    (by_hand / "data").mkdir(parents=True)
    for sub in ("raw", "frames"):
        (by_hand / "data" / sub).symlink_to(snakemake_run / "data" / sub)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict()))
    shell = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    # the pretraining too: the run by hand makes its own backbone weights, which must be the workflows' bytes
    run(["hcmi", "--params", str(params_file), "--data-root", str(by_hand / "data"), "weights"], tmp_path, env=shell)
    for step in ("train", "evaluate"):
        run(["hcmi", "--params", str(params_file), "--data-root", str(by_hand / "data"), step, "--dataset",
             "synthetic", "--model", "hcmi", "--seed", "0"], tmp_path, env=shell)
    hand = checkpoints.load(by_hand / "data/checkpoints/synthetic/hcmi/seeds/0/model.pt")
    hand_metrics = json.loads((by_hand / "data/results/synthetic/hcmi/seeds/0/metrics.json").read_text())
    hand_made = json.loads((by_hand / "data/results/synthetic/hcmi/seeds/0/provenance.json").read_text())
    assert hand_made["provenance"]["runtime"]["threads"] == tiny_params_dict()["compute"]["train_threads"]
    pretrained = "data/weights/files/hcmi-tiny__synthetic-stills.pt"
    assert (by_hand / pretrained).read_bytes() == (snakemake_run / pretrained).read_bytes() == \
        (origin / pretrained).read_bytes(), "the pretrained backbone: the same bytes however it is launched"
    for model in MODELS:
        a, b = model_of(snakemake_run, model), model_of(origin, model)
        assert set(a["state_dict"]) == set(b["state_dict"])
        assert model != "hcmi" or set(hand["state_dict"]) == set(a["state_dict"])
        for key, value in a["state_dict"].items():
            assert torch.equal(b["state_dict"][key], value), (model, key)
            if model == "hcmi":
                assert torch.equal(hand["state_dict"][key], value), key
        ours, theirs = metrics_of(snakemake_run, model, 0), metrics_of(origin, model, 0)
        compared = set(ours) - NOT_METRICS
        assert {"t2v", "v2t", "t2v_dsl", "v2t_dsl", "t2v_dsl_bank", "counts"} <= compared, compared
        assert model == "baseline" or {"levels", "hard_distractors"} <= compared, compared  # HCMI's levels
        assert compared == set(theirs) - NOT_METRICS
        for key in sorted(compared):
            assert ours[key] == theirs[key], (model, key)
            if model == "hcmi":
                assert hand_metrics[key] == ours[key], key


def test_the_zero_shot_row_is_the_pretrained_backbone_never_trained(snakemake_run):
    """The default run's zero-shot row: the backbone pretrained on still images, mean-pooled, evaluated as it is, in
    every report; dropping it re-runs no training and no other model's evaluation."""
    from hcmi.weights import STILLS_TAG, read_state_dict

    workdir = snakemake_run
    summary = metrics_of(workdir, "zero-shot")
    model = model_of(workdir, "zero-shot")
    assert summary["seeds"] == [0] and model["step"] == 0 and model["selected"] == "untrained"
    assert model["backbone"]["pretrained"] == STILLS_TAG
    pretrained = read_state_dict(workdir / f"data/weights/files/hcmi-tiny__{STILLS_TAG}.pt")
    backbone = {k.removeprefix("backbone.clip."): v for k, v in model["state_dict"].items()
                if k.startswith("backbone.clip.")}
    assert backbone.keys() == pretrained.keys() and all(torch.equal(backbone[k], pretrained[k]) for k in pretrained)
    for report in ("synthetic.html", "index.html", "results.md"):
        assert "zero-shot" in (workdir / "data/reports" / report).read_text(), report
    assert "| synthetic | hcmi vs zero-shot | t2v R@1 |" in (workdir / "data/reports/results.md").read_text()
    (workdir / "no_zero_shot.yaml").write_text("zero_shot: []\n")
    rules = planned_rules(workdir, "all", *TINY, "no_zero_shot.yaml")
    assert set(rules) <= {"dataset_report", "index_report"}, rules


def test_a_checkpoint_verifies_against_its_recorded_metrics(snakemake_run, tmp_path):
    workdir = snakemake_run
    args = ["--params", "params.yaml", "--params", "tiny.yaml", "verify", "--dataset", "synthetic", "--model", "hcmi",
            "--seed", "0"]  # the parameters the run was made with: the shipped ones and the tiny overrides
    result = hcmi(workdir, *args)
    assert "reproduced" in result.stderr
    metrics_path = workdir / "data/results/synthetic/hcmi/seeds/0/metrics.json"
    original = metrics_path.read_text()
    tampered = json.loads(original)
    tampered["t2v"]["R1"] += 10
    metrics_path.write_text(json.dumps(tampered))
    try:
        failed = hcmi(workdir, *args, check=False)
        assert failed.returncode == 1 and "does not reproduce" in failed.stderr and "t2v.R1" in failed.stderr
    finally:
        metrics_path.write_text(original)


def test_dvc_repro_runs_every_stage_once_and_then_nothing(dvc_origin):
    origin, first = dvc_origin
    assert "Running stage 'train@synthetic-baseline-0'" in first
    assert "Running stage 'train_ablation@synthetic-hcmi-no-frame-word-0'" in first
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
    params = tiny_params_dict()
    params["eval"]["top_k"] = 7
    write_params(clone, params)
    assert set(planned_rules(clone, "all")) == EVALUATION_AND_REPORTS


def test_switching_branches_with_dvc_checkout_runs_nothing_on_either(dvc_origin, tmp_path):
    origin, _ = dvc_origin
    run(["git", "checkout", "-q", "-b", "dsl-20"], origin)
    params = tiny_params_dict()
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
    # a change that DVC sees (params edited, nothing re-run yet) is handed to Snakemake to re-run
    write_params(clone, params)
    hcmi(clone, "sync")
    assert set(planned_rules(clone, "all")) == EVALUATION_AND_REPORTS


def test_dvc_metrics_plots_and_an_experiment_work_out_of_the_box(dvc_origin):
    origin, _ = dvc_origin
    run(["git", "checkout", "-q", "main"], origin)
    dvc(origin, "checkout")
    shown = dvc(origin, "metrics", "show").stdout
    assert "t2v.R1" in shown and "data/results/synthetic/baseline/scores.json" in shown
    assert "data/results/synthetic/hcmi/seeds/0/scores.json" in shown and "spread.json" in shown
    assert "provenance" not in shown and "environment" not in shown and "levels" not in shown
    widest = max(len(line) for line in shown.splitlines())
    assert widest < 300, f"dvc metrics show is {widest} characters wide"
    [workspace] = json.loads(dvc(origin, "metrics", "show", "--json").stdout).values()
    files = workspace["data"]
    assert len(files) == 4 + 4 * 2, sorted(files)  # 4 models of one seed: per run scores, per model scores, spread
    assert all("provenance" not in json.dumps(content) for content in files.values())
    dvc(origin, "plots", "show", "-o", "plots")
    assert (origin / "plots/index.html").stat().st_size > 0
    dvc(origin, "exp", "run", "-S", "eval.top_k=5")
    table = json.loads(dvc(origin, "exp", "show", "--json").stdout)
    experiments = [exp for commit in table for exp in (commit.get("experiments") or [])]
    values = [exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["eval"]["top_k"] for exp in experiments]
    assert 5 in values, table
