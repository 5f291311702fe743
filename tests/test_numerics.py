"""Portable numerics: every hcmi process pins torch's, oneDNN's and MKL's CPU kernels before anything computes, over
whatever the launcher's environment says; what else dispatches on the CPU gives the same bytes either way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from golden import FOREIGN_ENVIRONMENT
from hcmi import numerics

REPO = Path(__file__).resolve().parent.parent
needs_avx2 = pytest.mark.skipif(not {"avx2", "fma"} <= numerics.cpu_flags(), reason="the portable level needs AVX2")


def python(code: str, env_overrides: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_overrides}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


# a command-line run that computes a float32 matrix product (MKL) and a convolution (oneDNN) after `hcmi check`
AFTER_CLI = """
import sys, torch
from hcmi.cli import main
assert main(["--params", "params.yaml", {settings} "check"]) == 0
print("capability", torch.backends.cpu.get_cpu_capability())
torch.randn(64, 64) @ torch.randn(64, 64)
torch.nn.functional.conv2d(torch.randn(1, 3, 24, 24), torch.randn(8, 3, 8, 8), stride=8)
"""


def verbose_run(settings: str = "") -> subprocess.CompletedProcess:
    done = python(AFTER_CLI.format(settings=settings),
                  {**FOREIGN_ENVIRONMENT, "MKL_VERBOSE": "1", "ONEDNN_VERBOSE": "1"})
    assert done.returncode == 0, done.stderr
    return done


@needs_avx2
def test_the_command_line_pins_all_three_kernel_choices_over_a_foreign_environment():
    out = verbose_run().stdout
    assert "capability AVX2" in out
    gemm = [line for line in out.splitlines() if "SGEMM" in line]
    # MKL's COMPATIBLE branch: the one it keeps the same on Intel and AMD processors
    assert gemm and all("CNR:COMPATIBLE,STRICT" in line for line in gemm), gemm
    assert "isa:Intel AVX2" in out and "SSE4.1" not in out.split("isa:")[1].splitlines()[0]


@needs_avx2
def test_vendor_numerics_keep_mkl_on_its_avx2_branch():
    out = verbose_run('"--set", "compute.numerics=vendor",').stdout
    assert "capability AVX2" in out
    gemm = [line for line in out.splitlines() if "SGEMM" in line]
    assert gemm and all("CNR:AVX2,STRICT" in line for line in gemm), gemm


def test_native_numerics_leave_the_launchers_kernels_alone():
    out = verbose_run('"--set", "compute.numerics=native",').stdout
    assert "capability DEFAULT" in out  # the foreign environment's choice
    assert any("CNR:AVX2" in line and "STRICT" not in line for line in out.splitlines() if "SGEMM" in line)


def test_compatible_numerics_pin_the_lowest_level():
    out = verbose_run('"--set", "compute.numerics=compatible",').stdout
    assert "capability DEFAULT" in out
    assert all("CNR:COMPATIBLE,STRICT" in line for line in out.splitlines() if "SGEMM" in line)


@needs_avx2
def test_pinning_after_torch_computed_with_other_kernels_is_an_error():
    done = python("import torch; torch.ones(3) + 1\nfrom hcmi import numerics; numerics.pin('portable')",
                  {"ATEN_CPU_CAPABILITY": "default"})
    assert done.returncode != 0
    assert "torch already computes with its DEFAULT kernels" in done.stderr


@needs_avx2
def test_processes_started_after_pinning_inherit_the_kernels():
    code = """
import multiprocessing as mp
from hcmi import numerics
numerics.pin("portable")
import torch

def capability(_):
    return torch.backends.cpu.get_cpu_capability()

if __name__ == "__main__":
    with mp.get_context("spawn").Pool(1) as pool:
        print("child", pool.map(capability, [0])[0])
"""
    script = Path(REPO / ".pytest_cache" / "spawn_child.py")
    script.parent.mkdir(exist_ok=True)
    script.write_text(code)
    env = {**os.environ, **FOREIGN_ENVIRONMENT}
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "child AVX2" in done.stdout


def test_a_cpu_without_the_portable_level_gets_a_clear_error(monkeypatch):
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"sse2", "sse4_1"})
    monkeypatch.setattr(numerics, "is_x86", lambda: True)
    with pytest.raises(numerics.NumericsError, match="needs the CPU flags avx2, fma.*'compatible'"):
        numerics.pin("portable")


def test_the_record_names_what_decides_the_kernels():
    record = numerics.record("portable")
    assert record["mode"] == "portable"
    assert record["settings"] == numerics.SETTINGS["portable"]  # pinned by conftest, as by the command line
    assert record["torch_cpu_capability"] == "AVX2" or not {"avx2"} <= numerics.cpu_flags()
    assert record["mkl"] and record["onednn"].startswith("v")
    assert set(record["cpu_flags"]) <= set(numerics.KERNEL_FLAGS)
    assert record["agrees_with"].startswith("every x86-64-v3 machine") or not numerics.is_x86()


MODEL_FREE_RECORD = """
import json, sys
from hcmi import provenance
free = provenance.environment(None)
assert "torch" not in sys.modules, "recording a summary's environment imported torch"
import torch
loaded = provenance.environment(None)
print(json.dumps([sorted(free), sorted(free["numerics"]), sorted(loaded), sorted(loaded["numerics"])]))
"""


def test_a_process_without_torch_records_its_environment_without_importing_it():
    """A summary (no model, no torch) is not made to import torch for its provenance, and names no torch kernels;
    once torch is in the process, the same call names them again."""
    done = subprocess.run([sys.executable, "-c", MODEL_FREE_RECORD], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    free, free_numerics, loaded, loaded_numerics = json.loads(done.stdout)
    assert "cuda" not in free and "torch_cpu_capability" not in free_numerics and "libraries" in free
    assert {"cuda", "cudnn"} <= set(loaded) and {"torch_cpu_capability", "mkl", "onednn"} <= set(loaded_numerics)


def test_off_x86_the_record_says_plainly_that_nothing_is_pinned(monkeypatch):
    monkeypatch.setattr(numerics, "is_x86", lambda: False)
    monkeypatch.setattr(numerics.platform, "machine", lambda: "aarch64")
    for mode in numerics.MODES:
        assert numerics.agreement(mode).startswith("nothing is pinned on aarch64")


JPEG_ROUND_TRIP = """
import hashlib, io
import numpy as np
from PIL import Image
from hcmi.data.frames import encode_jpeg, resize_and_crop
rng = np.random.default_rng(0)
digest = hashlib.sha256()
for i in range(24):
    noise = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
    blocks = np.kron(rng.integers(0, 255, (10, 14, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
    frame = resize_and_crop((noise if i % 2 else blocks)[None], 24)[0]
    for quality in (75, 90):
        data = encode_jpeg(frame, quality)
        digest.update(data)
        digest.update(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).tobytes())
print(digest.hexdigest())
"""


@pytest.mark.parametrize("simd", ["JSIMD_FORCENONE", "JSIMD_FORCESSE2"])
def test_the_frame_cache_codec_gives_the_same_bytes_with_or_without_simd(simd):
    """libjpeg-turbo's SIMD (AVX2 here) against its plain C code (and SSE2): the cache's JPEG bytes and the decoded
    pixels must not depend on which the CPU runs, so the codec needs no pinning."""
    default = python(JPEG_ROUND_TRIP, {})
    forced = python(JPEG_ROUND_TRIP, {simd: "1"})
    assert default.returncode == 0 and forced.returncode == 0, default.stderr + forced.stderr
    assert default.stdout == forced.stdout
