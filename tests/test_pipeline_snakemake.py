"""The whole pipeline through the real Snakefile, at test size (tests/fixtures/tiny.yaml): outputs and their
provenance, that the models learn, a no-op re-run, exact re-runs after a parameter or a code change, the pinned numbers
of the tiny pipeline (tests/golden/tiny.json, which the same steps launched by hand reproduce), and checkpoint
verification. The same through DVC:
tests/test_pipeline_dvc.py (a module of its own, so that the two runs share the test workers)."""

import json
import re
import shutil

import pytest
import torch
import yaml

import golden

from conftest import REPO
from workflow_helpers import (EVALUATION_AND_REPORTS, LOSS_LINE, LOSS_LINE_EDITED, MODELS, NOT_METRICS, REPORTS,
                              TRAINING_AND_AFTER, copy_workflow, edited, hcmi, metrics_of, model_of,
                              nothing_to_do, planned_jobs, planned_rules, provenance_of, snakemake)

from hcmi import checkpoints

pytestmark = pytest.mark.slow

# Learning, asserted where it is reliable at test size: retrieval of the training captions among the training videos by
# the run's last weights (at 48 videos the held-out split is chance for these tiny models, and the weights kept are the
# best of a validation on 8 videos, which can be an early epoch). A scorer that has learned nothing ranks each query's
# video uniformly (ties count against it): the mean rank over Q queries among N videos is then (N + 1) / 2 with a spread
# of sqrt((N^2 - 1) / (12 Q)). The runs reach 16 such spreads below chance; 8 leaves a random scorer odds under 1e-15.
LEARNED_Z = 8

# the Snakemake run keeps the shipped params.yaml and shrinks it with Snakemake's own override mechanism
TINY = ("--configfile", "tiny.yaml")


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


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("smk") / "repo", yaml.safe_load((REPO / "params.yaml").read_text()))
    shutil.copy2(REPO / "tests/fixtures/tiny.yaml", workdir / "tiny.yaml")
    snakemake(workdir, "--cores", "2", "all", *TINY)
    return workdir


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


def test_changing_a_training_parameter_reruns_training_and_what_follows(snakemake_run):
    workdir = snakemake_run
    (workdir / "lr.yaml").write_text("train: {lr: 0.002}\n")
    rules = planned_rules(workdir, "all", *TINY, "lr.yaml")
    assert set(rules) == TRAINING_AND_AFTER and rules.count("train") == 3, rules


def test_a_loss_edit_reruns_training_and_what_follows_and_nothing_else(snakemake_run):
    with edited(snakemake_run / "hcmi/losses.py", LOSS_LINE, LOSS_LINE_EDITED):
        rules = planned_rules(snakemake_run, "all", *TINY)
        assert set(rules) == TRAINING_AND_AFTER and rules.count("train") == 3, rules
    assert nothing_to_do(snakemake_run, *TINY)


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


def test_a_report_edit_reruns_only_the_reports(snakemake_run):
    with edited(snakemake_run / "hcmi/report/tables.py", 'RECALL_COLUMNS = ["R1",', 'RECALL_COLUMNS = [ "R1",'):
        assert set(planned_rules(snakemake_run, "all", *TINY)) == REPORTS


def test_one_seed_gives_the_pinned_numbers_through_snakemake(snakemake_run):
    """The same steps with the same parameters give bit-identical results however they are launched: Snakemake's run
    of the tiny pipeline gives the golden fingerprints (tests/golden/tiny.json: the benchmark, the frame caches, the
    pretrained backbone, every tensor of the trained weights and every metric), which tests/test_golden.py reproduces
    with the same steps launched by hand in a shell that sets threads and kernels otherwise (and
    tests/test_pipeline_dvc.py compares DVC's run with a run by hand)."""
    if golden.level() is None:
        pytest.fail(golden.no_section_message())
    diff = golden.differences(golden.expected_fingerprints(golden.pinned()), golden.fingerprints(snakemake_run / "data"))
    assert not diff, "Snakemake's run differs from tests/golden/tiny.json:\n" + "\n".join(diff[:20])


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
