"""The benchmark scripts run end to end at smoke-test size and write their summary (no timing is asserted)."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_bench_scripts_write_results_and_a_summary(tmp_path):
    env = {**os.environ, "HCMI_BENCH_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, str(REPO / "bench/run.py"), "--quick"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    for name in ("eval_similarity", "frame_sampling", "loader", "train_step_cpu"):
        assert (tmp_path / f"{name}.json").exists(), name
    summary = (tmp_path / "summary.md").read_text()
    for section in ("Evaluation", "Frame sampling", "Training loader", "Training step"):
        assert section in summary
