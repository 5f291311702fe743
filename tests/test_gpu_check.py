"""bench/gpu_check.sh, the one-call check of every GPU path, run at smoke size on the CPU (no timing is asserted)."""

import os
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
