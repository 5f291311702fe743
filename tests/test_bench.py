"""The benchmark scripts run end to end at smoke-test size and write their summary (no timing is asserted)."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_bench_scripts_write_results_and_a_summary(tmp_path):
    env = {**os.environ, "HCMI_BENCH_DIR": str(tmp_path)}
    # the evaluation and training-step scripts run in tests/test_gpu_check.py (bench/gpu_check.sh calls them)
    result = subprocess.run([sys.executable, str(REPO / "bench/run.py"), "--quick", "--only", "frame_sampling,loader"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["frame_sampling.json", "loader.json"]
    summary = (tmp_path / "summary.md").read_text()
    for section in ("Frame sampling", "Training loader"):
        assert section in summary
    assert "Evaluation" not in summary


def test_bench_runner_rejects_an_unknown_benchmark(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "bench/run.py"), "--only", "eval_similarity,speed"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown benchmark(s) speed" in result.stderr
