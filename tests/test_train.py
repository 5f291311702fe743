"""Training runs: outputs, exact resume after a kill (after a validation, HCMI and the baseline), the NaN guard,
evaluation of the result, and checkpoints that load without running code."""

import json
import pickle
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml

from conftest import linked_root, tiny_params_dict, tiny_params_from

from hcmi import checkpoints


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


def test_select_last_reports_the_final_weights_and_best_the_best_on_validation(tiny_data, tmp_path):
    """train.select: last gives the weights of the schedule's end (validation still logged, no best.pt); best gives the
    weights of the epoch with the best validation R@1 (the first, where epochs tie)."""
    from hcmi.paths import Layout
    from hcmi.steps import train

    _, layout = tiny_data
    raw = tiny_params_dict()
    raw["train"].update(epochs=4)
    saved = {}
    for select in ("last", "best"):
        raw["train"]["select"] = select
        (tmp_path / select).mkdir()
        run_layout = Layout(linked_root(tmp_path / select, layout))
        train.run(tiny_params_from(raw), run_layout, "synthetic", "baseline", 0)
        run_dir = run_layout.run("synthetic", "baseline", 0)
        saved[select] = (checkpoints.load(run_dir / "model.pt"), checkpoints.load(run_dir / "state/last.pt"),
                         pd.read_csv(run_dir / "val_log.csv"), run_dir / "state/best.pt")
    model, last, val_log, best_path = saved["last"]
    assert model["selected"] == "last" and model["step"] == last["step"] == model["total_steps"]
    assert len(val_log) == 4 and not best_path.exists()
    for key, value in last["model"].items():
        torch.testing.assert_close(model["state_dict"][key], value, rtol=0, atol=0, msg=key)
    model_b, last_b, val_log_b, best_path_b = saved["best"]
    best = checkpoints.load(best_path_b)
    assert val_log_b.equals(val_log)  # the same training: only the reported weights differ
    best_step = int(val_log.loc[val_log["R1"].idxmax(), "step"])
    assert model_b["selected"] == "best" and model_b["step"] == best["step"] == best_step
    for key, value in best["state_dict"].items():
        torch.testing.assert_close(model_b["state_dict"][key], value, rtol=0, atol=0, msg=key)


def test_train_and_evaluate_write_every_output_with_provenance(tiny_data, tmp_path):
    from hcmi.paths import Layout
    from hcmi.steps import evaluate, train

    params, layout = tiny_data
    run_layout = Layout(linked_root(tmp_path, layout))
    train.run(params, run_layout, "synthetic", "hcmi", 0)
    run_dir = run_layout.run("synthetic", "hcmi", 0)
    checkpoint = checkpoints.load(run_dir / "model.pt")
    assert checkpoint["variant"] == "hcmi" and checkpoint["selected"] in ("best", "last")
    record = checkpoint["provenance"]
    assert {"code", "params", "data", "environment", "runtime"} <= set(record)
    assert len(record["code"]["package_sha256"]) == 64 and len(record["code"]["step_code_sha256"]) == 64
    assert record["runtime"]["threads"] == params.compute.train_threads and record["runtime"]["wall_time_s"] > 0
    assert torch.__version__.startswith(record["environment"]["libraries"]["torch"])
    assert record["data"]["annotations"] and record["data"]["train_frames"]
    log = pd.read_csv(run_dir / "train_log.csv")
    assert {"step", "epoch", "loss", "loss_video_sentence", "loss_clip_phrase", "loss_frame_word", "loss_triplet",
            "latent_positives", "lr", "samples_per_s"} <= set(log.columns)
    assert len(pd.read_csv(run_dir / "val_log.csv")) >= 1
    result = evaluate.run(params, run_layout, "synthetic", "hcmi", 0)
    assert set(result) >= {"t2v", "v2t", "t2v_dsl", "v2t_dsl", "t2v_dsl_bank", "levels", "hard_distractors", "counts"}
    assert result["counts"]["videos"] == 16 and result["hard_distractors"]["pairs"] == 16
    rankings = pd.read_parquet(run_layout.rankings("synthetic", "hcmi", 0))
    assert len(rankings) == 16 and len(rankings.loc[0, "top_videos"]) == params.eval.top_k
    stored = json.loads(run_layout.seed_metrics("synthetic", "hcmi", 0).read_text())
    assert stored["t2v"] == result["t2v"] and not {"provenance", "model_provenance"} & set(stored)
    made = json.loads(run_layout.seed_provenance("synthetic", "hcmi", 0).read_text())
    assert set(made["provenance"]) == {"code", "params", "data", "environment", "runtime"}
    assert made["model_provenance"] == checkpoint["provenance"]
    scores = json.loads(run_layout.seed_scores("synthetic", "hcmi", 0).read_text())
    assert scores["t2v"]["R1"] == round(result["t2v"]["R1"], 2) and set(scores) == {"t2v", "v2t", "t2v_dsl",
                                                                                    "v2t_dsl", "hard"}


def kill_mid_training(args, params_file, root, state, after_validation: bool):
    """Start training, kill it (SIGKILL) once last.pt exists and, if asked, after the first validation."""
    proc = hcmi(args, params_file, root)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            try:
                saved = checkpoints.load(state, "state")
            except checkpoints.CheckpointError:
                saved = None  # caught between write and rename: look again
            if saved and (saved["val_rows"] or not after_validation):
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return checkpoints.load(state, "state")


@pytest.mark.parametrize("model", ["hcmi", "baseline"])
def test_killed_training_resumes_and_ends_identically_to_an_uninterrupted_run(tiny_data, tmp_path, model):
    """Killed after a validation: the resumed run restores the best score, best.pt, the logs, the data
    position and every state (HCMI's heads and objective included) and ends with the same weights, best.pt and val_log
    as a straight run. (6 steps an epoch, a checkpoint every 4: the first state after a validation, step 8, is
    mid-epoch.)"""
    params, layout = tiny_data
    params_file = write_params(tmp_path, epochs=4, checkpoint_every=4)
    roots = {name: linked_root(tmp_path, layout, name) for name in ("interrupted", "straight")}
    args = ["train", "--dataset", "synthetic", "--model", model, "--seed", "0"]
    run_dir = f"checkpoints/synthetic/{model}/seeds/0"
    straight = hcmi(args, params_file, roots["straight"])  # the uninterrupted reference, side by side
    saved = kill_mid_training(args, params_file, roots["interrupted"], roots["interrupted"] / run_dir / "state/last.pt",
                              after_validation=True)
    assert not saved["finished"] and saved["step"] > 0 and saved["val_rows"], "the kill must land after a validation"

    resumed = hcmi(args, params_file, roots["interrupted"])
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"resuming from step {saved['step']}" in output
    output_straight, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, output_straight

    def final(root):
        folder = root / run_dir
        return (checkpoints.load(folder / "model.pt"), checkpoints.load(folder / "state/best.pt"),
                pd.read_csv(folder / "train_log.csv"), pd.read_csv(folder / "val_log.csv"))

    (model_a, best_a, log_a, val_a), (model_b, best_b, log_b, val_b) = final(roots["interrupted"]), final(
        roots["straight"])
    assert model_a["selected"] == model_b["selected"] and model_a["step"] == model_b["step"]
    for key, value in model_b["state_dict"].items():
        torch.testing.assert_close(model_a["state_dict"][key], value, rtol=0, atol=0, msg=key)
    assert best_a["step"] == best_b["step"] and best_a["score"] == best_b["score"]
    for key, value in best_b["state_dict"].items():
        torch.testing.assert_close(best_a["state_dict"][key], value, rtol=0, atol=0, msg=key)
    pd.testing.assert_frame_equal(val_a, val_b)
    pd.testing.assert_series_equal(log_a["loss"], log_b["loss"])


def test_training_state_is_written_every_checkpoint_every_steps_and_finished_at_the_end(tiny_data, tmp_path,
                                                                                       monkeypatch):
    """last.pt at every multiple of train.checkpoint_every (not at epoch ends: an epoch here is 6 steps), and once,
    finished, after the last step."""
    from hcmi import train_state
    from hcmi.paths import Layout
    from hcmi.steps import train

    _, layout = tiny_data
    raw = tiny_params_dict()
    raw["train"].update(epochs=2, checkpoint_every=5)  # 12 steps
    written, real_save = [], train_state.save

    def recording(path, fingerprint, progress, model, optimizer, scheduler, finished=False):
        written.append((progress.step, finished))
        real_save(path, fingerprint, progress, model, optimizer, scheduler, finished)

    monkeypatch.setattr(train_state, "save", recording)
    train.run(tiny_params_from(raw), Layout(linked_root(tmp_path, layout)), "synthetic", "baseline", 0)
    assert written == [(5, False), (10, False), (12, True)]


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    from hcmi import trainer as trainer_module
    from hcmi.paths import Layout
    from hcmi.steps import train
    from hcmi.trainer import TrainingError

    _, layout = tiny_data
    run_layout = Layout(linked_root(tmp_path, layout))
    raw = tiny_params_dict()
    raw["train"].update(epochs=3, checkpoint_every=2)
    params = tiny_params_from(raw)
    real_loss = trainer_module.retrieval_loss
    calls = {"n": 0}

    def poisoned(sims, *args, **kwargs):
        result = real_loss(sims, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:  # step 5: the frame-word level blows up
            result.parts["frame_word"] = result.parts["frame_word"] * float("nan")
            result.total = result.total + result.parts["frame_word"]
        return result

    monkeypatch.setattr(trainer_module, "retrieval_loss", poisoned)
    with pytest.raises(TrainingError) as error:
        train.run(params, run_layout, "synthetic", "hcmi", 0)
    message = str(error.value)
    assert "step 5" in message and "loss_frame_word" in message and "last.pt (step 4)" in message
    assert "\n" not in message, "the command line prints it as one line"
    state = checkpoints.load(run_layout.train_state("synthetic", "hcmi", 0) / "last.pt")
    assert state["step"] == 4 and not state["finished"]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not run_layout.model_file("synthetic", "hcmi", 0).exists()


def test_accumulation_and_separate_learning_rates(tiny_data, tmp_path):
    from hcmi.distributed import Distributed
    from hcmi.paths import Layout
    from hcmi.runtime import configure
    from hcmi.steps.train import build_job
    from hcmi.trainer import _Run

    _, layout = tiny_data
    raw = tiny_params_dict()
    raw["train"].update(batch_size=8, accumulation_steps=2, backbone_lr_scale=0.1, epochs=1)
    params = tiny_params_from(raw)
    run_layout = Layout(linked_root(tmp_path, layout))
    job = build_job(params, run_layout, "synthetic", "hcmi", 0, configure("cpu", 1, True, "portable"), Distributed())
    run = _Run(job)
    assert run.steps_per_epoch == (96 // 8) // 2  # 96 training pairs, two contrastive batches per step
    lrs = {group["name"]: group["lr"] for group in run.optimizer.param_groups}
    assert lrs["heads"] == pytest.approx(raw["train"]["lr"] * run.schedule(0))
    assert lrs["backbone"] == pytest.approx(0.1 * lrs["heads"])
    result = run.run()
    assert result.train_rows[-1]["step"] == run.total_steps == 6


class _Payload:
    """Unpickling this object creates a file: what a crafted checkpoint on a shared remote could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_checkpoint_is_refused_and_its_code_never_runs(tiny_data, tmp_path):
    from hcmi.paths import Layout
    from hcmi.steps import evaluate

    params, layout = tiny_data
    run_layout = Layout(linked_root(tmp_path, layout))
    marker = tmp_path / "pwned"
    path = run_layout.model_file("synthetic", "hcmi", 0)
    path.parent.mkdir(parents=True)
    with open(path, "wb") as handle:
        torch.save({"format": checkpoints.FORMAT, "state_dict": {}, "evil": _Payload(marker)}, handle)
    with pytest.raises(checkpoints.CheckpointError, match="refusing to load"):
        evaluate.run(params, run_layout, "synthetic", "hcmi", 0)
    assert not marker.exists(), "loading the checkpoint ran code"
    with open(marker.with_suffix(".check"), "wb") as handle:  # the payload is real: plain unpickling runs it
        pickle.dump(_Payload(marker), handle)
    pickle.loads(marker.with_suffix(".check").read_bytes())
    assert marker.exists()


def test_an_old_format_checkpoint_gets_a_clear_message(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"format": 2, "state_dict": {}}, path)
    with pytest.raises(checkpoints.CheckpointError, match="format 2, this hcmi reads format 3"):
        checkpoints.load(path, "trained model")


def crafted_checkpoint(root, marker):
    path = root / "checkpoints/synthetic/hcmi/seeds/0/model.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, path)


def truncated_annotations(root, marker):
    (root / "raw").unlink()
    (root / "raw/synthetic").mkdir(parents=True)
    (root / "raw/synthetic/annotations.parquet").write_bytes(b"PAR1 truncated")


# every bad input the README names: (command, how the data is spoilt, what the one line must say)
BAD_INPUTS = {
    "misspelled key": (["--set", "train.lrr=0.1", "check"], None, ["unknown key 'train.lrr'", "did you mean 'lr'"]),
    "mistyped value": (["--set", "train.lr=fast", "check"], None,
                       ["'train.lr'", "should be a valid number", "'fast'"]),
    "missing model": (["evaluate", "--dataset", "synthetic", "--model", "hcmi", "--seed", "7"], None,
                      ["seeds/7/model.pt: trained model not found", "hcmi train"]),
    "crafted checkpoint": (["evaluate", "--dataset", "synthetic", "--model", "hcmi", "--seed", "0"],
                           crafted_checkpoint, ["seeds/0/model.pt: refusing to load", "can run code"]),
    "truncated annotations": (["train", "--dataset", "synthetic", "--model", "hcmi", "--seed", "0"],
                              truncated_annotations, ["annotations.parquet: not a readable annotation table",
                                                      "hcmi parse"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_one_line_naming_the_file_or_key_and_the_remedy(tiny_data, tmp_path, case):
    """What the user sees on a bad input is one line (no traceback, nothing else on stderr), and nothing runs."""
    _, layout = tiny_data
    args, spoil, expected = BAD_INPUTS[case]
    root = linked_root(tmp_path, layout)
    marker = tmp_path / "payload-ran"
    if spoil:
        spoil(root, marker)
    result = subprocess.run([sys.executable, "-m", "hcmi.cli", "--params", str(write_params(tmp_path)),
                             "--data-root", str(root), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode in (1, 2), result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert all(text in lines[0] for text in expected), lines[0]
    assert not marker.exists()


def first_step_gradients(params, layout, tmp_path, run_env, chunk_from=None):
    """The gradients of the trainer's first optimizer step (two views, denoising, enhancement, clipping), in float64
    so that only the order of operations can differ between two ways of computing them. `chunk_from`: another
    runtime whose device resolves train.gradcache_chunk (a GPU's, for `auto`); the step itself runs on `run_env`."""
    from dataclasses import replace

    from hcmi.distributed import Distributed
    from hcmi.paths import Layout
    from hcmi import trainer
    from hcmi.steps.train import build_job
    from hcmi.trainer import _Run

    tmp_path.mkdir()
    run_layout = Layout(linked_root(tmp_path, layout))
    job = build_job(params, run_layout, "synthetic", "hcmi", 0, chunk_from or run_env, Distributed())
    job = replace(job, model=job.model.double(), runtime=run_env)
    run = _Run(job)
    calls = []
    original = trainer.cached_backward
    trainer.cached_backward = lambda *args, **kwargs: calls.append(args[2]) or original(*args, **kwargs)
    try:
        run.optimizer_step(next(run.epoch_steps(0, 0)))
    finally:
        trainer.cached_backward = original
    assert calls == ([job.config.gradcache_chunk] if job.config.gradcache_chunk else []), calls
    grads = {name: p.grad.detach().clone() for name, p in run.model.named_parameters() if p.grad is not None}
    return job.config.gradcache_chunk, grads


@pytest.mark.parametrize("setting", [4, "auto"])
def test_gradient_caching_through_the_trainer_gives_the_plain_steps_gradients(tiny_data, tmp_path, setting):
    """train.gradcache_chunk as the trainer runs it: a chunk size N, and `auto` resolved by the memory plan for a
    training GPU too small for the whole batch; each gives every gradient of the plain step. On the CPU `auto`
    means no caching."""
    from types import SimpleNamespace

    from hcmi.runtime import configure

    _, layout = tiny_data
    raw = tiny_params_dict()
    raw["train"].update(batch_size=8, epochs=1, grad_clip=1.0)
    cpu = configure("cpu", 1, True, "portable")
    plain_chunk, expected = first_step_gradients(tiny_params_from(raw), layout, tmp_path / "plain", cpu)
    assert plain_chunk == 0
    raw["train"]["gradcache_chunk"] = setting
    chunk_from = None
    if setting == "auto":
        auto_on_cpu, _ = first_step_gradients(tiny_params_from(raw), layout, tmp_path / "auto-cpu", cpu)
        assert auto_on_cpu == 0, "no GPU to plan for: no caching"
        from hcmi.memory import estimate_memory
        from hcmi.memory import job_workload as workload

        estimate = estimate_memory(workload(tiny_params_from(raw), "synthetic", "hcmi"))
        # a GPU that fits the cached step in chunks of 4 items but neither the plain step nor whole-batch chunks
        raw["compute"]["gpu_memory_gb"] = (estimate.cached_peak(8, 4, 1) + 2**10) / 2**30
        assert estimate.cached_peak(8, 8, 1) > estimate.cached_peak(8, 4, 1) + 2**10
        chunk_from = SimpleNamespace(device=torch.device("cuda"))
    chunk, got = first_step_gradients(tiny_params_from(raw), layout, tmp_path / "cached", cpu, chunk_from)
    assert 0 < chunk < 8, chunk
    if setting != "auto":
        assert chunk == setting
    assert set(got) == set(expected) and len(expected) > 0
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-9, atol=1e-12, msg=name)
