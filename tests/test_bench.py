"""The benchmark scripts run end to end at smoke-test size and write their summary (no timing is asserted)."""

import json
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


def test_search_bench_measures_both_coarse_kinds_and_summarises(tmp_path):
    scratch = tmp_path / "scratch"  # where the script puts its stores (its temporary directory)
    scratch.mkdir()
    env = {**os.environ, "HCMI_BENCH_DIR": str(tmp_path), "TMPDIR": str(scratch)}
    result = subprocess.run([sys.executable, str(REPO / "bench/run.py"), "--quick", "--only", "search"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    data = json.loads((tmp_path / "search.json").read_text())
    kinds = {row["coarse"] for row in data["rows"]}
    assert "flat (chosen)" in kinds and any(kind.startswith("ivf/") for kind in kinds)
    assert {row["cache"] for row in data["rows"]} == {"cold", "warm"}
    chosen = [row for row in data["rows"] if row["depth"] == data["depth"] and "chosen" in row["coarse"]]
    assert chosen and all(row["recall@10"] >= 0.9 and row["rss_peak_mb"] > 0 for row in chosen)
    size = data["sizes"][0]
    assert size["float16_vs_float32"]["top10_overlap"] >= 0.9 and size["exact_single_s_per_query"] > 0
    assert "Two-stage search" in (tmp_path / "summary.md").read_text()
    assert not list(scratch.iterdir())  # the stores were deleted
