"""bench/gpu_check.sh, the one-call check of every GPU path, run at smoke size on the CPU (no timing is asserted)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_gpu_check_script_runs_every_step_at_smoke_size(tiny_data, tmp_path):
    """bench/gpu_check.sh (the one-call GPU check) at smoke size on whatever device there is: GPU tests, benchmarks,
    a training run and its evaluation, each logged, and at most eight files back (what a device call returns)."""
    _, layout = tiny_data
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_DATA": str(layout.root)}
    result = subprocess.run(["bash", str(REPO / "bench/gpu_check.sh"), "run", "--quick", str(out)], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    log = (out / "check.log").read_text()
    for name in ("gpu tests", "benchmarks", "train hcmi", "evaluate hcmi"):
        assert f"== {name}" in log and f"== {name} (" in log, name
    assert "gpu_check: all steps passed" in log
    counted = re.search(r"gpu tests: (\d+) passed, (\d+) skipped, (\d+) failed", log)
    assert counted and int(counted.group(1)) >= 2 and counted.group(3) == "0", log  # the CPU cases ran
    if "all ran (cuda)" in log:
        assert counted.group(2) == "0", "on a GPU machine every GPU test runs"
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(p.is_file() for p in out.iterdir()), files
    for name in ("check.log", "eval_similarity.json", "summary.md", "pytest.xml", "train_log.csv", "metrics.json"):
        assert name in files, name
    assert "t2v" in (out / "metrics.json").read_text()
    assert (out / "train_step_cpu.json").exists() or (out / "train_step_cuda.json").exists()
    summary = (out / "summary.md").read_text()
    assert "Evaluation" in summary and "Training step" in summary


def test_gpu_check_without_a_gpu_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "bench/gpu_check.sh"), "run", str(tmp_path / "out")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "no CUDA device visible" in result.stdout + result.stderr


def test_gpu_check_fails_without_the_frame_cache_of_its_training_run(tmp_path):
    """A check that could not train did not pass: no frame cache is a failure, not a skipped step."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_DATA": str(tmp_path / "empty")}
    result = subprocess.run(["bash", str(REPO / "bench/gpu_check.sh"), "run", "--quick", str(out)], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 1
    log = (out / "check.log").read_text()
    assert "gpu_check: FAILED: training run (no frame cache under" in log, log[-2000:]
