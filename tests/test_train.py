"""Training runs: outputs, resume after a kill, the NaN guard, and evaluation of the result."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml

from conftest import tiny_params_dict


def write_params(tmp_path, **train):
    raw = tiny_params_dict()
    raw["train"].update(train)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def hcmi(args, params_file, data_root, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "hcmi.cli", "--params", str(params_file), "--data-root",
                             str(data_root), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def test_train_and_evaluate_write_every_output(tiny_data, tmp_path):
    from hcmi.config import from_dict
    from hcmi.evaluate import evaluate_run
    from hcmi.paths import Layout
    from hcmi.train import train_run

    params, layout = tiny_data
    run_layout = Layout(tmp_path / "data")
    (tmp_path / "data").mkdir()
    for sub in ("raw", "frames"):
        (tmp_path / "data" / sub).symlink_to(layout.root / sub)
    train_run(params, "synthetic", "hcmi", 0, run_layout)
    run_dir = run_layout.run("synthetic", "hcmi", 0)
    checkpoint = torch.load(run_dir / "model.pt", weights_only=False)
    assert checkpoint["variant"] == "hcmi" and checkpoint["selected"] in ("best", "last")
    log = pd.read_csv(run_dir / "train_log.csv")
    assert {"step", "epoch", "loss", "loss_video_sentence", "loss_clip_phrase", "loss_frame_word", "lr",
            "samples_per_s"} <= set(log.columns)
    assert len(pd.read_csv(run_dir / "val_log.csv")) >= 1
    result = evaluate_run(params, "synthetic", "hcmi", 0, run_layout)
    assert set(result) >= {"t2v", "v2t", "t2v_dsl", "v2t_dsl", "levels", "hard_distractors", "counts"}
    assert result["counts"]["videos"] == 16 and result["hard_distractors"]["pairs"] == 16
    rankings = pd.read_parquet(run_layout.rankings("synthetic", "hcmi", 0))
    assert len(rankings) == 16 and len(rankings.loc[0, "top_videos"]) == params.eval.top_k
    assert json.loads(run_layout.seed_metrics("synthetic", "hcmi", 0).read_text())["t2v"] == result["t2v"]


def test_killed_training_resumes_from_last_checkpoint_and_ends_identically(tiny_data, tmp_path):
    params, layout = tiny_data
    params_file = write_params(tmp_path, epochs=6, checkpoint_every=2)
    roots = {}
    for name in ("interrupted", "straight"):
        root = tmp_path / name
        root.mkdir()
        for sub in ("raw", "frames"):
            (root / sub).symlink_to(layout.root / sub)
        roots[name] = root
    args = ["train", "--dataset", "synthetic", "--model", "baseline", "--seed", "0"]
    state = roots["interrupted"] / "checkpoints/synthetic/baseline/seeds/0/state/last.pt"
    straight = hcmi(args, params_file, roots["straight"])  # the uninterrupted reference, side by side
    proc = hcmi(args, params_file, roots["interrupted"])
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(state, weights_only=False)
    assert not saved["finished"] and saved["step"] > 0, "the kill must land mid-training"

    resumed = hcmi(args, params_file, roots["interrupted"])
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"resuming from step {saved['step']}" in output
    output_straight, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, output_straight

    def final(root):
        run_dir = root / "checkpoints/synthetic/baseline/seeds/0"
        return torch.load(run_dir / "model.pt", weights_only=False), pd.read_csv(run_dir / "train_log.csv")

    (model_a, log_a), (model_b, log_b) = final(roots["interrupted"]), final(roots["straight"])
    for key, value in model_b["state_dict"].items():
        torch.testing.assert_close(model_a["state_dict"][key], value, rtol=0, atol=0, msg=key)
    pd.testing.assert_series_equal(log_a["loss"], log_b["loss"])


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    from hcmi import train as train_module
    from hcmi.paths import Layout
    from hcmi.train import TrainingError, Trainer

    params, layout = tiny_data
    run_layout = Layout(tmp_path / "data")
    (tmp_path / "data").mkdir()
    for sub in ("raw", "frames"):
        (tmp_path / "data" / sub).symlink_to(layout.root / sub)
    raw = tiny_params_dict()
    raw["train"].update(epochs=3, checkpoint_every=2)
    from hcmi.config import from_dict

    params = from_dict(raw)
    real_loss = train_module.retrieval_loss
    calls = {"n": 0}

    def poisoned(sims, *args, **kwargs):
        total, parts = real_loss(sims, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:  # step 5: the frame-word level blows up
            parts["frame_word"] = parts["frame_word"] * float("nan")
            total = total + parts["frame_word"]
        return total, parts

    monkeypatch.setattr(train_module, "retrieval_loss", poisoned)
    trainer = Trainer(params, "synthetic", "hcmi", 0, run_layout)
    with pytest.raises(TrainingError) as error:
        trainer.run()
    message = str(error.value)
    assert "step 5" in message and "loss_frame_word" in message and "last.pt (step 4)" in message
    state = torch.load(trainer.last_path, weights_only=False)
    assert state["step"] == 4 and not state["finished"]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not run_layout.model_file("synthetic", "hcmi", 0).exists()


def test_accumulation_and_separate_learning_rates(tiny_data, tmp_path):
    from hcmi.config import from_dict
    from hcmi.paths import Layout
    from hcmi.train import Trainer

    _, layout = tiny_data
    root = tmp_path / "data"
    root.mkdir()
    for sub in ("raw", "frames"):
        (root / sub).symlink_to(layout.root / sub)
    raw = tiny_params_dict()
    raw["train"].update(batch_size=8, accumulation_steps=2, backbone_lr_scale=0.1, epochs=1)
    trainer = Trainer(from_dict(raw), "synthetic", "hcmi", 0, Layout(root))
    assert trainer.steps_per_epoch == (96 // 8) // 2  # 96 training pairs, two contrastive batches per step
    lrs = {group["name"]: group["lr"] for group in trainer.optimizer.param_groups}
    assert lrs["heads"] == pytest.approx(raw["train"]["lr"] * trainer.lr_factor(0))
    assert lrs["backbone"] == pytest.approx(0.1 * lrs["heads"])
    trainer.run()
    log = pd.read_csv(Layout(root).train_log("synthetic", "hcmi", 0))
    assert log["step"].max() == trainer.total_steps == 6
