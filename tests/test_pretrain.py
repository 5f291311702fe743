"""The embedded benchmark's pretrained backbone: still images of its objects (hcmi/data/stills.py), contrastive
pretraining (hcmi/pretrain.py) run by `hcmi weights` for backbone.pretrained: synthetic-stills, and fine-tuning that
starts from it."""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from conftest import QUICK_PRETRAINING, linked_root, tiny_params_dict, tiny_params_from
from hcmi.data import synthetic
from hcmi.data.stills import render_still, render_stills, stills
from hcmi.parameters import PretrainParams
from hcmi.weights import STILLS_TAG, read_state_dict, weights_file

WEIGHTS = ("weights", "files", f"hcmi-tiny__{STILLS_TAG}.pt")


def run_weights(tmp_path, root, **pretrain):
    raw = tiny_params_dict()
    raw["pretrain"].update(pretrain)
    params_file = tmp_path / f"params-{root.name}.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, "-m", "hcmi.cli", "--params", str(params_file), "--data-root", str(root),
                           "weights"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((root / "weights" / "backbone.json").read_text())["backbones"][0], done.stderr


def corpus_params(**values) -> PretrainParams:
    """params `pretrain` (the shipped values) with `values` changed."""
    return PretrainParams.model_validate({**tiny_params_dict()["pretrain"], **values})


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_corpus_is_a_pure_function_of_its_parameters_and_names_objects_only():
    source = corpus_params(seed=3, images=300, held_out=50, max_objects=3, size=32)
    first, again = stills(source, "train"), stills(source, "train")
    assert first == again
    np.testing.assert_array_equal(render_stills(first, 32, 24), render_stills(again, 32, 24))
    another = corpus_params(seed=4, images=300, held_out=50, max_objects=3, size=32)
    assert stills(another, "train") != first, "another seed, another corpus"
    held_out = stills(source, "held_out")
    assert not {s.caption for s in held_out[:20]} <= {s.caption for s in first}, "held-out images are new draws"
    counts = {len(s.objects) for s in first}
    assert counts == {1, 2, 3}, counts
    action_words = {w for phrases in synthetic.ACTION_PHRASES.values() for p in phrases for w in p.split()}
    order_words = {"then", "before", "after", "first", "finally", "next", "last"}
    for item in first:
        words = set(re.findall(r"[a-z]+", item.caption))
        assert not words & (action_words | order_words) - {"to", "the"}, item.caption
        for o in item.objects:  # every object is named by its colour and a word for its shape
            assert re.search(rf"{o.colour} ({'|'.join(synthetic.SHAPE_WORDS[o.shape])})\b", item.caption), item.caption
        assert len(item.caption.split(" and ")) <= len(item.objects)


def test_no_still_is_a_frame_of_a_benchmark_video():
    """The default corpus against the default benchmark's videos, at the size both are rendered at: not one image in
    common (checked on every test and validation video and the first training families)."""
    params = tiny_params_from(yaml.safe_load(open("params.yaml")))
    source = params.synthetic()
    pretrain = params.get("pretrain")
    assert pretrain["size"] == source.size, "the corpus is rendered as large as the videos"
    corpus = corpus_params(**{**pretrain, "images": 4000})
    specs = [s for s in synthetic.video_specs(source) if s.split != "train"] + synthetic._train_specs(source)[:300]
    frames = set()
    for spec in specs:
        for frame in synthetic.render(spec, source.fps, source.event_seconds, source.size):
            frames.add(hashlib.sha1(frame.tobytes()).digest())
    assert len(frames) > 10_000
    images = [render_still(item, source.size) for part in ("train", "held_out") for item in stills(corpus, part)]
    shared = [i for i, image in enumerate(images) if hashlib.sha1(image.tobytes()).digest() in frames]
    assert not shared, f"{len(shared)} still images are frames of benchmark videos"
    # the check can fail: a frame rendered as a still is found
    spec = specs[0]
    assert hashlib.sha1(synthetic.render(spec, source.fps, source.event_seconds, source.size)[3].tobytes()).digest() \
        in frames


def test_pretraining_is_deterministic_and_retrieves_held_out_captions_far_above_chance(tmp_path):
    """Two runs of `hcmi weights` in two places give the same bytes; the backbone retrieves the captions of held-out
    images (single objects of 24 kinds: chance about 1 in 24) far above chance in both directions."""
    setting = dict(images=1024, held_out=200, max_objects=1, epochs=4, batch_size=64)
    first, log = run_weights(tmp_path, tmp_path / "a", **setting)
    second, _ = run_weights(tmp_path, tmp_path / "b", **setting)
    assert first["kind"] == "pretrained on the embedded benchmark's still images"
    assert first["sha256"] == second["sha256"] == sha256(tmp_path.joinpath("a", *WEIGHTS))
    assert first["held_out_retrieval"] == second["held_out_retrieval"]
    held = first["held_out_retrieval"]
    n, chance = held["images"], held["chance_R1"] / 100
    for key in ("t2i_R1", "i2t_R1"):
        hits = held[key] / 100 * n
        z = (hits - n * chance) / math.sqrt(n * chance * (1 - chance))
        assert z >= 8, (key, held)  # a backbone that learned nothing passes with odds under 1e-15
    log_rows = (tmp_path.joinpath("a", *WEIGHTS).with_suffix(".log.csv")).read_text().splitlines()
    assert len(log_rows) == 1 + 4 * (1024 // 64)
    assert "pretrain" in log


def test_the_weights_step_keeps_up_to_date_pretraining_and_redoes_it_when_its_parameters_change(tmp_path):
    root = tmp_path / "data"
    quick = QUICK_PRETRAINING["pretrain"]  # that pretraining ran, or did not, is all this test asks
    first, _ = run_weights(tmp_path, root, **quick)
    path = tmp_path.joinpath("data", *WEIGHTS)
    made = path.stat().st_mtime_ns
    again, log = run_weights(tmp_path, root, **quick)
    assert "is up to date" in log and path.stat().st_mtime_ns == made and again == first
    changed, log = run_weights(tmp_path, root, **quick, lr=1e-2)
    assert "is up to date" not in log and changed["sha256"] != first["sha256"]


def test_fine_tuning_and_the_zero_shot_row_start_from_the_pretrained_weights(tiny_data, tmp_path):
    """The first training step's weights are the pretrained ones (the backbone; the new heads are initialised), and
    the zero-shot model is the pretrained backbone, never trained."""
    from hcmi import checkpoints
    from hcmi.distributed import Distributed
    from hcmi.model import create_backbone
    from hcmi.paths import Layout
    from hcmi.runtime import configure
    from hcmi.steps import snapshot, train, weights

    params, layout = tiny_data
    assert params.get("backbone.pretrained") == STILLS_TAG
    run_layout = Layout(linked_root(tmp_path, layout))
    weights.run(params, run_layout)
    pretrained = read_state_dict(weights_file("hcmi-tiny", STILLS_TAG, run_layout.weights()))
    random_init = create_backbone("hcmi-tiny").clip.state_dict()
    assert any(not torch.equal(pretrained[k], random_init[k]) for k in pretrained), "pretraining changed nothing"

    job = train.build_job(params, run_layout, "synthetic", "hcmi", 0, configure("cpu", 1, True, "portable"),
                          Distributed())
    start = job.model.backbone.clip.state_dict()
    assert start.keys() == pretrained.keys()
    for key, value in pretrained.items():
        assert torch.equal(start[key], value), key

    snapshot.run(params, run_layout, "synthetic", "zero-shot")
    zero_shot = checkpoints.load(run_layout.model_file("synthetic", "zero-shot", 0))
    assert zero_shot["step"] == 0 and zero_shot["selected"] == "untrained"
    backbone = {k.removeprefix("backbone.clip."): v for k, v in zero_shot["state_dict"].items()
                if k.startswith("backbone.clip.")}
    assert backbone.keys() == pretrained.keys()
    assert all(torch.equal(backbone[k], pretrained[k]) for k in pretrained)


def test_a_missing_pretrained_file_names_the_step_that_makes_it(tmp_path):
    from hcmi.weights import WeightsError, load_backbone_weights

    with pytest.raises(WeightsError, match="hcmi weights"):
        load_backbone_weights("hcmi-tiny", STILLS_TAG, tmp_path)


def test_the_paper_config_fine_tunes_openai_weights_and_pretrains_nothing():
    """config/paper.yaml keeps its meaning: every backbone it uses is OpenAI's CLIP, fine-tuned at CLIP4Clip's rate,
    so its weights step fetches and never pretrains on the embedded benchmark's stills."""
    from hcmi.steps.common import load_params

    params = load_params(["params.yaml", "config/paper.yaml"])
    assert {b["pretrained"] for b in params.backbones_in_use()} == {"openai"}
    assert params.get("train.backbone_lr_scale") == 0.001 and "zero-shot" in params.get("zero_shot")
