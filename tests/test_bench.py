"""The benchmark scripts run end to end at smoke-test size and write their summary (no timing is asserted)."""

import importlib.util
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


def test_training_step_bench_compares_gradient_caching_with_the_plain_step(tmp_path):
    """Times alternate in one process; each mode's peak memory comes from a fresh process, the estimate beside it."""
    env = {**os.environ, "HCMI_BENCH_DIR": str(tmp_path)}
    command = [sys.executable, str(REPO / "bench/train_step.py"), "--backbone", "hcmi-tiny", "--batch", "4",
               "--rounds", "1", "--compare", "gradcache", "--chunk", "1"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    saved = json.loads((tmp_path / "train_step_cpu.json").read_text())
    assert "rows" not in saved, "the heads comparison was not asked for"
    gradcache = saved["gradcache"]
    assert [row["mode"] for row in gradcache["rows"]] == ["plain", "cached"]
    assert [row["chunk"] for row in gradcache["rows"]] == [4, 1]
    for row in gradcache["rows"]:
        assert row["s_per_step"] > 0 and row["step_peak_mb"] > 0 and row["estimated_step_peak_mb"] > 0
    assert gradcache["memory_measured_by"] == "VmHWM"
    assert "gradient caching in chunks of 1" in result.stdout


def test_training_step_bench_times_each_numerics_mode_in_processes_of_its_own(tmp_path):
    env = {**os.environ, "HCMI_BENCH_DIR": str(tmp_path), "ATEN_CPU_CAPABILITY": "default"}
    command = [sys.executable, str(REPO / "bench/train_step.py"), "--backbone", "hcmi-tiny", "--batch", "4",
               "--frames", "4", "--rounds", "1", "--compare", "numerics"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    rows = {row["numerics"]: row for row in json.loads((tmp_path / "numerics_cpu.json").read_text())["numerics"]["rows"]}
    assert set(rows) == {"portable", "vendor", "compatible", "native"}
    assert rows["compatible"]["torch_kernels"] == "DEFAULT"
    assert rows["native"]["torch_kernels"] != "DEFAULT"  # the launcher's pinned variables are not passed on
    assert rows["native"]["ratio_to_native"] == 1.0 and all(row["s_per_step"] > 0 for row in rows.values())
    assert "portable" in result.stdout and "x the native step's time" in result.stdout


def test_summary_has_lines_for_gradient_caching():
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench/run.py")
    bench_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_run)
    rows = [{"mode": "plain", "chunk": 8, "s_per_step": 2.0, "step_peak_mb": 3000.0, "estimated_step_peak_mb": 3100.0},
            {"mode": "cached", "chunk": 2, "s_per_step": 2.8, "step_peak_mb": 800.0, "estimated_step_peak_mb": 850.0}]
    result = {"machine": {}, "backbone": "ViT-B-32", "batch": 8, "frames": 12,
              "gradcache": {"rows": rows, "chunk": 2, "time_ratio": 1.4, "memory_ratio": 0.27,
                            "memory_measured_by": "VmHWM"}}
    summary = "\n".join(bench_run.summary_lines({"train_step_cpu": result}))
    assert "## Training step (ViT-B-32, batch 8 x 12 frames, cpu)" in summary
    assert "gradient caching, chunks of 2" in summary
    assert "cached: 2.8 s/step, peak 800.0 MB (850.0 MB)" in summary
    assert "1.4x the time, 0.27x the peak memory" in summary
    assert "HCMI heads overhead" not in summary


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
