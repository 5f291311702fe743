"""After a crash: a Snakemake run killed mid-training (kill -9 of its whole process group) leaves its lock behind, so
the next run refuses to start until `snakemake --unlock`; then a plain re-run does only the missing work and the
interrupted training resumes from its checkpoint (docs/cluster.md, "Cluster and faults")."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import QUICK_PRETRAINING, tiny_params_dict
from workflow_helpers import BIN, copy_workflow, snakemake

pytestmark = pytest.mark.slow

# one model, no ablation; 120 training steps with a checkpoint every 30, so the kill lands midway
TRAIN = {"epochs": 20, "checkpoint_every": 30}
CHECKPOINT = Path("data/checkpoints/synthetic/baseline/seeds/0/state/last.pt")
SPLITS = 3  # train, val, test: every frame cache is finished before the kill, so only training is interrupted
WAIT_TIMEOUT_S = 300
AFTER_TRAINING = {"train", "evaluate", "summarize", "dataset_report", "index_report", "all"}


def test_a_killed_run_needs_unlock_then_finishes_only_the_missing_work_resuming_training(tmp_path):
    import torch

    params = tiny_params_dict()
    params["models"], params["ablations"], params["zero_shot"] = ["baseline"], [], []
    params["train"].update(TRAIN)
    params["pretrain"].update(QUICK_PRETRAINING["pretrain"])
    workdir = copy_workflow(tmp_path / "repo", params)
    log_path = tmp_path / "killed-run.log"

    def ready_to_kill() -> bool:
        finished_samples = re.findall(r"Finished jobid: \d+ \(Rule: sample\)", log_path.read_text())
        return len(finished_samples) == SPLITS and (workdir / CHECKPOINT).exists()

    with open(log_path, "w") as log:
        run = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", "all"], cwd=workdir, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while not ready_to_kill():
            assert run.poll() is None, f"the run ended before training was midway:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(0.1)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # Snakemake and the jobs it started (its process group): a crash
        run.wait(timeout=WAIT_TIMEOUT_S)
    wait_until_group_is_gone(run.pid)
    saved = torch.load(workdir / CHECKPOINT, weights_only=False)
    assert saved["step"] > 0 and not saved["finished"], "the kill landed midway through training"

    refused = snakemake(workdir, "--cores", "2", "all", check=False)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Directory cannot be locked" in output and "--unlock" in output, output[-3000:]
    assert not (workdir / "data/results").exists(), "the refused run did nothing"

    snakemake(workdir, "--unlock")
    rerun = snakemake(workdir, "--cores", "2", "all")
    rerun_output = rerun.stdout + rerun.stderr
    rules = set(re.findall(r"^(?:local)?rule (\w+):$", rerun_output, flags=re.M))
    assert rules == AFTER_TRAINING, "download, parse and sampling had finished: only the rest runs again"
    train_log = (workdir / "logs/train/synthetic-baseline-0.log").read_text()
    assert f"resuming from step {saved['step']} of" in train_log, train_log[-2000:]
    for path in ("data/reports/index.html", "data/reports/synthetic.html",
                 "data/results/synthetic/baseline/metrics.json"):
        assert (workdir / path).stat().st_size > 0, path


def wait_until_group_is_gone(group: int) -> None:
    """The killed processes may take a moment to disappear; none may keep writing into the run's folder."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of group {group} still alive {WAIT_TIMEOUT_S} s after kill -9")
