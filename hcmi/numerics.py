"""Which CPU kernels compute a result: pinned, so that the same step gives the same bits on every machine of a level.

Float sums depend on the order of their terms, and the order depends on the vector kernels a library picks for the
CPU it runs on: torch's own kernels (ATen dispatches on the CPU's instruction set), oneDNN's (convolutions; it
JIT-compiles for the widest ISA it finds) and MKL's (every float32 matrix product; it also picks block sizes from the
CPU's cache sizes). One epoch with two kernel choices already leaves no weight tensor identical, and training turns
that into another results table. So every hcmi process pins the three before torch computes anything
(`compute.numerics`):

    portable    x86-64-v3 (AVX2 + FMA), every vendor: torch's AVX2 kernels, oneDNN at most AVX2 (both JIT or
                compiled code that runs the same instructions on an Intel and an AMD processor), and MKL's COMPATIBLE
                branch in strict mode, the one MKL promises to give the same results on Intel and non-Intel processors
                (its faster branches are kept identical across Intel processors only). Measured: an Intel Xeon with
                AVX-512 and an AMD EPYC with AVX2 give the same bits (docs/reproducibility.md). The default.
    vendor      x86-64-v3 per CPU vendor: as portable, but MKL on its AVX2 branch (faster matrix products); machines of
                one vendor agree, an Intel and an AMD machine do not.
    compatible  any x86-64: torch's scalar kernels, oneDNN at most SSE4.1, MKL's COMPATIBLE branch. Slowest.
    native      whatever the CPU offers (nothing pinned; the launcher's environment decides): fastest, per machine.

Off x86-64 (ARM) none of the three libraries read these variables: nothing is pinned there, whatever the mode, and
every result says so (`record`).

What else dispatches on the CPU was checked, not pinned: the JPEG codec of the frame cache (libjpeg-turbo in Pillow)
gives identical bytes with its SIMD forced off (tests/test_numerics.py proves it on every run), decord's H.264
decoding is bit-exact by the standard, the synthetic videos are encoded with x264's assembly off, and numpy's BLAS is
on no training or evaluation path. The settings take effect through the environment, so every process an hcmi
process starts (DataLoader workers, torchrun's workers, papermill kernels) inherits them; Snakemake, DVC and sbatch
jobs run `hcmi`, which pins them itself.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

from hcmi.errors import HcmiError

MODES = ("portable", "vendor", "compatible", "native")

# the variables each library reads once, when it first computes; the values of each mode
SETTINGS: dict[str, dict[str, str]] = {
    "portable": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE,STRICT"},
    "vendor": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2,STRICT"},
    "compatible": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE,STRICT"},
    "native": {},
}
VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")
# torch.backends.cpu.get_cpu_capability() once a mode's kernels are in use
TORCH_CAPABILITY = {"portable": "AVX2", "vendor": "AVX2", "compatible": "DEFAULT"}
# the CPU flags a mode needs (Linux /proc/cpuinfo names)
REQUIRED_FLAGS = {"portable": ("avx2", "fma"), "vendor": ("avx2", "fma"), "compatible": ()}
# which machines give the same bits as this one, per mode (on x86-64; elsewhere nothing is pinned)
AGREES_WITH = {"portable": "every x86-64-v3 machine (AVX2 + FMA), Intel and AMD alike",
               "vendor": "x86-64-v3 machines of the same CPU vendor",
               "compatible": "every x86-64 machine",
               "native": "machines with the same CPU kernels only (nothing pinned)"}
# the flags that decide which kernels run where nothing is pinned (recorded with every result)
KERNEL_FLAGS = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "amx_tile", "amx_bf16", "asimd", "sve")


class NumericsError(HcmiError, RuntimeError):
    """The pinned kernels cannot be had in this process or on this CPU."""


def pin(mode: str) -> dict[str, str]:
    """Set the kernel variables of `mode` in this process's environment (its children inherit them) and return them.
    Must run before torch computes anything; `check` confirms it did."""
    if mode not in MODES:
        raise NumericsError(f"compute.numerics must be one of {', '.join(MODES)}, not {mode!r}")
    missing = [flag for flag in REQUIRED_FLAGS.get(mode, ()) if flag not in cpu_flags()]
    if missing and is_x86():
        raise NumericsError(f"compute.numerics {mode!r} needs the CPU flags {', '.join(missing)}, which this CPU "
                            f"({cpu_model()}) lacks: set compute.numerics to 'compatible' (any x86-64) or 'native'")
    os.environ.update(SETTINGS[mode])
    check(mode)
    return dict(SETTINGS[mode])


def check(mode: str) -> None:
    """Raise when torch already chose other kernels than `mode` pins (it fixes its choice at the first operation)."""
    expected = TORCH_CAPABILITY.get(mode)
    if expected is None or "torch" not in sys.modules or not is_x86():
        return
    import torch

    in_use = torch.backends.cpu.get_cpu_capability()
    if in_use != expected:
        raise NumericsError(f"torch already computes with its {in_use} kernels, but compute.numerics {mode!r} needs "
                            f"{expected}: pin the numerics (hcmi.numerics.pin) before the first tensor operation")


def record(mode: str | None) -> dict:
    """What decides the kernels of this process: for the provenance of every result (torch's kernels where torch is
    in the process or a mode is pinned for it; a process without torch is not made to import it)."""
    record = {"mode": mode, "settings": {name: os.environ.get(name) for name in VARIABLES},
              "machine": platform.machine(), "cpu": cpu_model(), "vendor": cpu_vendor(),
              "cpu_flags": [flag for flag in KERNEL_FLAGS if flag in cpu_flags()],
              "agrees_with": agreement(mode)}
    if mode is None and "torch" not in sys.modules:
        return record
    import torch

    record["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    record.update(library_builds(torch.__config__.show()))
    return record


def agreement(mode: str | None) -> str | None:
    """Which machines this mode's results agree with, said plainly; off x86-64 nothing is pinned."""
    if mode is None:
        return None
    if not is_x86():
        return (f"nothing is pinned on {platform.machine()}: compute.numerics acts on x86-64 only, so these numbers "
                "agree only with machines that run the same kernels")
    return AGREES_WITH[mode]


def library_builds(config_text: str) -> dict:
    """MKL's and oneDNN's versions from torch's build description."""
    found = {}
    for key, pattern in (("mkl", r"Math Kernel Library Version ([^\s]+)"), ("onednn", r"MKL-DNN (v[^\s]+)")):
        match = re.search(pattern, config_text)
        found[key] = match.group(1) if match else None
    return found


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags() -> set[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_vendor() -> str:
    """The CPU's vendor (x86: GenuineIntel, AuthenticAMD; elsewhere the architecture), recorded with every result:
    MKL's faster branches (compute.numerics: vendor) are reproducible on one vendor's processors only."""
    for line in _cpuinfo().splitlines():
        if line.startswith("vendor_id"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
