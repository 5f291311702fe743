"""Golden fingerprints: what the tiny pipeline (params.yaml + tests/fixtures/tiny.yaml) must produce, bit for bit, on
every machine of the pinned kernel level (compute.numerics: portable).

    python tests/golden.py            # run the tiny pipeline and compare with tests/golden/tiny.json
    python tests/golden.py --update   # re-pin: write tests/golden/tiny.json from a fresh run
    python tests/golden.py --set compute.numerics=compatible   # only print the fingerprints under other settings

Re-pin only for a deliberate change of what the pipeline computes (a new default, a model change, a library upgrade),
in the same commit as that change and with the reason in its message (docs/reproducibility.md). A machine whose
numbers differ from the pinned ones fails tests/test_golden.py instead of writing another results table.

The fingerprints are pinned per CPU vendor (GenuineIntel, AuthenticAMD): MKL promises the same results on one vendor's
processors only, and an Intel and an AMD machine gave other float32 results under the same pinned kernels
(docs/reproducibility.md). `--update` writes this machine's vendor and leaves the others; the data (benchmark, frame
caches) must agree across vendors, which tests/test_golden.py checks.

Fingerprinted: the synthetic benchmark (its manifest: every video's sha256), the frame cache of each split (the
shard bytes and the index's rows), the backbone pretrained on still images (`hcmi weights`), the trained weights of
HCMI and the baseline (every tensor's name, dtype, shape and bytes) and every metric of their evaluation, exactly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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
FOREIGN_ENVIRONMENT = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE",
                       "JSIMD_FORCENONE": "1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
NOT_METRICS = ("run", "provenance", "model_provenance")


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


def vendor() -> str:
    sys.path.insert(0, str(REPO))
    from hcmi.numerics import cpu_vendor

    return cpu_vendor()


def pinned() -> dict:
    """{vendor: {"cpu": the CPU it was pinned on, and the fingerprints}}."""
    return json.loads(GOLDEN.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true",
                        help="write this CPU vendor's fingerprints into tests/golden/tiny.json from this run")
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
        print(json.dumps({"vendor": vendor(), "settings": args.settings, **found}, indent=2, sort_keys=True))
        return 0
    if args.update:
        from hcmi.numerics import cpu_model

        everything = pinned() if GOLDEN.exists() else {}
        everything[vendor()] = {"cpu": cpu_model(), **found}
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        tmp = GOLDEN.with_suffix(".tmp")
        tmp.write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
        tmp.replace(GOLDEN)
        print(f"{GOLDEN.relative_to(REPO)}: {vendor()} written")
        return 0
    if vendor() not in pinned():
        print(f"no golden fingerprints for {vendor()} processors (pinned: {', '.join(pinned())})")
        return 1
    expected = {key: value for key, value in pinned()[vendor()].items() if key != "cpu"}
    diff = differences(expected, found)
    print("\n".join(diff) if diff else "identical to the golden fingerprints")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
