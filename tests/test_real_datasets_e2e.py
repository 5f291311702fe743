"""The five real benchmarks through the real Snakefile: the paper config plans every step without data, and one run at
test size takes all five datasets (fixture annotation files in their real formats, tiny generated videos named as
each dataset names them, placed in the manual folders) from download to the index report."""

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hcmi.data import synthetic
from hcmi.data.annotations import parse

from conftest import QUICK_PRETRAINING, REPO, tiny_params_dict
from workflow_helpers import copy_workflow, planned_jobs, snakemake

DATASETS = ["msrvtt", "msvd", "lsmdc", "didemo", "activitynet"]
FIXTURES = REPO / "tests" / "fixtures"
MISSING_VIDEO = ("msrvtt", "video7040")  # annotated in the 1k-A test split, no file: listed, never dropped


def paper_workdir(tmp_path):
    workdir = copy_workflow(tmp_path / "repo", tiny_params_dict())
    shutil.copytree(REPO / "config", workdir / "config")
    shutil.copy2(REPO / "params.yaml", workdir / "params.yaml")  # the shipped parameters under the paper overrides
    return workdir


def test_paper_config_plans_every_step_for_the_five_datasets_without_data(tmp_path):
    jobs = planned_jobs(paper_workdir(tmp_path), "all", "--configfile", "config/paper.yaml")
    for rule in ("download", "parse", "train", "evaluate", "summarize", "dataset_report"):
        planned = {Path(out).stem if rule == "dataset_report" else out.split("/")[2]
                   for job in jobs if job["rule"] == rule for out in job["outputs"]}
        assert planned == set(DATASETS), (rule, planned)
    assert sum(job["rule"] == "sample" for job in jobs) == 3 * len(DATASETS)
    assert sum(job["rule"] == "train" for job in jobs) == 4 * len(DATASETS)  # baseline and hcmi x ViT-B/32 and B/16
    trained = {job["outputs"][0].split("/")[3] for job in jobs if job["rule"] == "train"}
    assert trained == {"baseline", "hcmi", "baseline-b16", "hcmi-b16"}
    assert [job["rule"] for job in jobs].count("index_report") == 1
    # the pretrained weights are made local once, by the weights step, before any training
    weights = [job for job in jobs if job["rule"] == "weights"]
    assert [job["outputs"] for job in weights] == [["data/weights/backbone.json"]]
    assert weights[0]["command"].startswith("hcmi weights")
    train = next(job for job in jobs if job["rule"] == "train")
    assert "hcmi train" in train["command"]


def test_published_figures_name_their_source_and_backbone():
    from hcmi.report.published import T2V_R1, published

    for dataset in DATASETS:
        for head in ("meanp", "hcmi"):
            figure = published(dataset, head, "ViT-B-32-quickgelu")
            assert 0 < figure.r1 < 100 and figure.backbone and "arXiv" in figure.source
            assert figure.protocol == ("DSL" if head == "hcmi" else "plain"), "HCMI's figures are with DSL"
    clip4clip_meanp_vit_b32 = {"msrvtt": 43.1, "msvd": 46.2, "lsmdc": 20.7, "didemo": 43.4, "activitynet": 40.5}
    assert {d: published(d, "meanp", "ViT-B-32").r1 for d in DATASETS} == clip4clip_meanp_vit_b32
    assert not published("lsmdc", "meanp", "ViT-B-32").verified, "no source was checked for this one: unverified"
    assert published("msrvtt", "meanp", "ViT-B-16") is None, "no ViT-B/16 meanP figure is recorded: missing"
    assert published("synthetic", "hcmi", "hcmi-tiny") is None
    assert set(T2V_R1) == set(DATASETS)


# ----------------------------------------------------------------------------------------------------------------
# one run at test size


def video_file_name(dataset: str, video_id: str, k: int) -> str:
    """Each dataset's real naming (and the variants real downloads produce)."""
    if dataset == "msvd":
        return f"{video_id}.avi"  # YouTubeClips/<id>.avi
    if dataset == "lsmdc":
        return f"{video_id.rsplit('_', 1)[0]}/{video_id}.avi"  # per-movie folders
    if dataset == "didemo":  # the original Flickr name, or with .mp4 appended as the AWS download script saves it
        return f"{video_id}.mov" if k % 2 else f"{video_id}.mov.mp4"
    if dataset == "activitynet":  # v_<YouTube id>.mp4 officially; CLIP4Clip's copies drop the prefix
        return f"{video_id}.mp4" if k % 2 else f"{video_id.removeprefix('v_')}.mkv"
    return f"{video_id}.mp4"  # MSR-VTT: video<N>.mp4


def fill_manual_folder(manual, dataset):
    shutil.copytree(FIXTURES / dataset, manual)
    video_ids = list(dict.fromkeys(parse(dataset, FIXTURES / dataset)["video_id"]))
    for k, video_id in enumerate(video_ids):
        if (dataset, video_id) == MISSING_VIDEO:
            continue
        rng = np.random.default_rng(zlib.crc32(video_id.encode()))
        frames = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
        synthetic.write_mp4(manual / "videos" / video_file_name(dataset, video_id, k), frames, fps=6)


def e2e_params(manual_root) -> dict:
    params = tiny_params_dict()
    # one trained model, no zero-shot row (its path is the synthetic run's: tests/test_pipeline_snakemake.py)
    params.update(datasets=DATASETS, models=["baseline"], seeds=[0], ablations=[], ablation_seeds=[0], zero_shot=[])
    for dataset in DATASETS:
        # hcmi-tiny reads 32 tokens; paragraph datasets keep their longer queries, truncated like any other
        params["data"][dataset] = {"max_frames": 4, "max_words": 32, "test_folds": 1,
                                   "source": {"manual_dir": str(manual_root / dataset)}}
    params["frames"].update(max_skip_fraction=0.5)  # one of the few fixture videos is missing on purpose
    params["train"].update(batch_size=4, epochs=1, log_every=1, checkpoint_every=1)
    params["pretrain"].update(QUICK_PRETRAINING["pretrain"])
    return params


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    for dataset in DATASETS:
        fill_manual_folder(root / "manual" / dataset, dataset)
    workdir = copy_workflow(root / "repo", e2e_params(root / "manual"))
    result = snakemake(workdir, "--cores", "2", "all")
    return workdir, result


def seed_metrics(workdir, dataset):
    return json.loads((workdir / f"data/results/{dataset}/baseline/seeds/0/metrics.json").read_text())


@pytest.mark.slow
def test_every_step_runs_for_the_five_datasets(real_run):
    workdir, _ = real_run
    for dataset in DATASETS:
        for log in (f"download/{dataset}", f"parse/{dataset}", f"sample/{dataset}-test", f"train/{dataset}-baseline-0",
                    f"evaluate/{dataset}-baseline-0", f"summarize/{dataset}-baseline", f"dataset_report/{dataset}"):
            assert (workdir / "logs" / f"{log}.log").exists(), log
        assert (workdir / f"data/reports/{dataset}.html").stat().st_size > 0
        manifest = json.loads((workdir / f"data/raw/{dataset}/manifest.json").read_text())
        assert any(name.startswith("videos/") for name in manifest["files"])
    index = (workdir / "data/reports/index.html").read_text()
    assert all(dataset in index for dataset in DATASETS)
    assert "43.1" not in index, "no published figure was measured with the test backbone, and none is made up"


@pytest.mark.slow
@pytest.mark.parametrize("dataset, videos, captions", [
    ("msrvtt", 3, 3),  # 1k-A protocol: one JSFusion sentence per video; video7040 has no file
    ("msvd", 3, 11),  # multi-caption: every test caption is a query
    ("lsmdc", 3, 3),
    ("didemo", 3, 3),  # paragraph-to-video: one joined query per video
    ("activitynet", 3, 3),  # val_1, paragraphs
])
def test_metrics_count_the_protocols_queries_and_videos(real_run, dataset, videos, captions):
    counts = seed_metrics(real_run[0], dataset)["counts"]
    missing = 1 if dataset == MISSING_VIDEO[0] else 0
    assert counts == {"videos": videos, "captions": captions, "skipped_videos": missing,
                      "dropped_captions": missing, "galleries": 1, "gallery_videos": [videos]}


@pytest.mark.slow
def test_the_missing_video_is_listed_in_skipped_csv(real_run):
    workdir, _ = real_run
    skipped = pd.read_csv(workdir / "data/frames/msrvtt/test/skipped.csv")
    assert list(skipped.video_id) == [MISSING_VIDEO[1]]
    assert pd.read_csv(workdir / "data/frames/msvd/test/skipped.csv").empty


@pytest.mark.slow
def test_paragraph_queries_are_the_joined_sentences(real_run):
    rankings = pd.read_parquet(real_run[0] / "data/results/activitynet/baseline/seeds/0/rankings.parquet")
    query = rankings.set_index("video_id").loc["v_bXdq2zI1Ms0", "text"]
    assert query == "Three men are standing on a mat. The man in front begins to do karate on the mat."
    assert len(rankings) == 3
