"""Golden fingerprints: what the tiny pipeline (params.yaml + tests/fixtures/tiny.yaml) must produce, bit for bit, on
every machine of the pinned kernel level (compute.numerics: portable).

    python tests/golden.py            # run the tiny pipeline and compare with tests/golden/tiny.json
    python tests/golden.py --update   # re-pin: write tests/golden/tiny.json from a fresh run
    python tests/golden.py --set compute.numerics=compatible   # only print the fingerprints under other settings

Re-pin only for a deliberate change of what the pipeline computes (a new default, a model change, a library upgrade),
in the same commit as that change and with the reason in its message (docs/reproducibility.md). A machine whose
numbers differ from the pinned ones fails tests/test_golden.py instead of writing another results table.

One set of fingerprints serves every x86-64-v3 machine (AVX2 + FMA), Intel and AMD alike: `portable` pins MKL to its
COMPATIBLE branch, the one it keeps identical across vendors, and torch and oneDNN to AVX2 (docs/reproducibility.md).
The file records the settings it was pinned under and the CPUs it was reproduced on; a machine of another level (no
AVX2, or not x86-64, where nothing is pinned) has no section and fails.

Fingerprinted: the synthetic benchmark (its manifest: every video's sha256), the frame cache of each split (the
shard bytes and the index's rows), the backbone pretrained on still images (`hcmi weights`), the trained weights of
HCMI and the baseline (every tensor's name, dtype, shape and bytes) and every metric of their evaluation, exactly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden" / "tiny.json"
PARAMS = ("params.yaml", "tests/fixtures/tiny.yaml")
MODELS = ("baseline", "hcmi")
SPLITS = ("train", "val", "test")
SEED = 0
# another machine, emulated: every kernel variable at a level other than the pinned one, libjpeg-turbo without SIMD,
# and other thread counts; hcmi must pin its own settings over all of these
FOREIGN_ENVIRONMENT = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "AVX2",
                       "JSIMD_FORCENONE": "1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
NOT_METRICS = ("run", "provenance", "model_provenance")
LEVEL = "x86-64-v3"
PARTS = ("benchmark", "frame_cache", "pretrained", "weights", "metrics")


def hcmi(root: Path, env: dict, *args: str, settings: tuple[str, ...] = ()) -> None:
    command = [str(Path(sys.executable).parent / "hcmi")]
    for params in PARAMS:
        command += ["--params", str(REPO / params)]
    for setting in settings:
        command += ["--set", setting]
    command += ["--data-root", str(root), *args]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


def run_pipeline(root: Path, env: dict | None = None, settings: tuple[str, ...] = (),
                 models: tuple[str, ...] = MODELS) -> None:
    """The tiny pipeline, step by step through the command line, into `root`."""
    env = dict(os.environ if env is None else env)
    hcmi(root, env, "download", "--dataset", "synthetic", settings=settings)
    hcmi(root, env, "parse", "--dataset", "synthetic", settings=settings)
    for split in SPLITS:
        hcmi(root, env, "sample", "--dataset", "synthetic", "--split", split, settings=settings)
    hcmi(root, env, "weights", settings=settings)
    for model in models:
        hcmi(root, env, "train", "--dataset", "synthetic", "--model", model, "--seed", str(SEED), settings=settings)
        hcmi(root, env, "evaluate", "--dataset", "synthetic", "--model", model, "--seed", str(SEED),
             settings=settings)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def benchmark_fingerprint(root: Path) -> str:
    manifest = json.loads((root / "raw" / "synthetic" / "manifest.json").read_text())
    return _sha256(json.dumps(manifest["files"], sort_keys=True).encode())


def cache_fingerprint(root: Path, split: str) -> str:
    import pandas as pd

    folder = root / "frames" / "synthetic" / split
    digest = hashlib.sha256()
    for path in sorted((folder / "shards").iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    index = pd.read_parquet(folder / "index.parquet")
    digest.update(index.to_csv(index=False).encode())
    return digest.hexdigest()


def weights_fingerprint(path: Path, key: str | None = "state_dict") -> str:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state[key] if key else state
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def metric_values(path: Path) -> dict[str, float]:
    result = json.loads(path.read_text())
    flat: dict[str, float] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix] = value

    walk("", {k: v for k, v in result.items() if k not in NOT_METRICS})
    return dict(sorted(flat.items()))


def fingerprints(root: Path, models: tuple[str, ...] = MODELS) -> dict:
    return {
        "benchmark": benchmark_fingerprint(root),
        "frame_cache": {split: cache_fingerprint(root, split) for split in SPLITS},
        "pretrained": weights_fingerprint(root / "weights" / "files" / "hcmi-tiny__synthetic-stills.pt", key=None),
        "weights": {m: weights_fingerprint(root / "checkpoints" / "synthetic" / m / "seeds" / str(SEED) / "model.pt")
                    for m in models},
        "metrics": {m: metric_values(root / "results" / "synthetic" / m / "seeds" / str(SEED) / "metrics.json")
                    for m in models},
    }


def differences(expected: dict, found: dict, prefix: str = "") -> list[str]:
    """Every leaf that differs, as 'key: expected -> found'."""
    if isinstance(expected, dict) and isinstance(found, dict):
        out = []
        for key in sorted(set(expected) | set(found)):
            out += differences(expected.get(key), found.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if expected == found else [f"{prefix}: {expected!r} -> {found!r}"]


def level() -> str | None:
    """The pinned kernel level of this machine: x86-64-v3 where the CPU has AVX2 and FMA, else None (nothing pinned)."""
    sys.path.insert(0, str(REPO))
    from hcmi import numerics

    if not numerics.is_x86():
        return None
    return LEVEL if set(numerics.REQUIRED_FLAGS["portable"]) <= numerics.cpu_flags() else None


def pinned() -> dict:
    """{"level": ..., "settings": the portable settings pinned under, "cpus": where reproduced, and the fingerprints}."""
    return json.loads(GOLDEN.read_text())


def expected_fingerprints(section: dict) -> dict:
    return {key: section[key] for key in PARTS}


def no_section_message() -> str:
    from hcmi import numerics

    return (f"no golden fingerprints for this machine ({numerics.cpu_model()}, {platform.machine()}): they are pinned "
            f"for {LEVEL} (AVX2 + FMA) only; elsewhere compute.numerics pins nothing (docs/reproducibility.md)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true",
                        help="write tests/golden/tiny.json from this run (the portable level, x86-64-v3)")
    parser.add_argument("--root", type=Path, help="where the run goes (default: a temporary folder)")
    parser.add_argument("--set", action="append", default=[], dest="settings", metavar="KEY=VALUE",
                        help="run with these parameters changed and print the fingerprints (nothing is compared)")
    args = parser.parse_args(argv)
    if args.settings and args.update:
        parser.error("--update pins the shipped parameters only: leave --set out")
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or Path(scratch) / "data"
        run_pipeline(root, settings=tuple(args.settings))
        found = fingerprints(root)
    if args.settings:
        print(json.dumps({"settings": args.settings, **found}, indent=2, sort_keys=True))
        return 0
    if level() is None:
        print(no_section_message())
        return 1
    from hcmi import numerics

    if args.update:
        everything = {"level": LEVEL, "settings": numerics.SETTINGS["portable"],
                      "cpus": [f"{numerics.cpu_model()} ({numerics.cpu_vendor()})"], **found}
        tmp = GOLDEN.with_suffix(".tmp")
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
        tmp.replace(GOLDEN)
        print(f"{GOLDEN.relative_to(REPO)} written ({LEVEL}); add the CPUs it is reproduced on to its 'cpus'")
        return 0
    section = pinned()
    if section["settings"] != numerics.SETTINGS["portable"]:
        print(f"the portable settings changed since the fingerprints were pinned ({section['settings']}): re-pin")
        return 1
    diff = differences(expected_fingerprints(section), found)
    print("\n".join(diff) if diff else "identical to the golden fingerprints")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
