"""Helpers for tests that run the real Snakefile and dvc.yaml in a scratch copy of the repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import yaml

from conftest import REPO

# what a fresh clone has that the workflows read; the package source too, since DVC depends on its files
WORKFLOW_FILES = ["Snakefile", "workflow", "profiles", "notebooks", "dvc.yaml", "hcmi", "params.yaml", ".dvc",
                  ".dvcignore", ".gitignore"]
BIN = Path(sys.executable).parent


def copy_workflow(dest: Path, params: dict, git: bool = False) -> Path:
    """The repository's workflow files (as a fresh clone has them) with `params` as params.yaml."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints",
                                                                            "cache", "tmp", "config.local"),
                            symlinks=True)
        elif src.exists():
            shutil.copy2(src, dest / name)
    write_params(dest, params)
    if git:
        run(["git", "init", "-q", "-b", "main"], dest)
    return dest


def write_params(dest: Path, params: dict) -> None:
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def environment(cwd: Path) -> dict:
    """The scratch copy's own package comes first on the path, as in a checkout with `pip install -e`: Snakemake
    hashes, and every step runs, the code DVC depends on."""
    env = dict(os.environ)
    if (Path(cwd) / "hcmi").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH")]))
    return env


def run(args: list[str], cwd: Path, check: bool = True, timeout: float = 900,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """`args` in `cwd` (`env`: variables set or, with None as their value, removed for this command)."""
    variables = environment(cwd)
    for name, value in (env or {}).items():
        variables.pop(name, None) if value is None else variables.__setitem__(name, value)
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=variables)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-6000:]}")
    return result


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(BIN / "snakemake"), *args], cwd, check=check)


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(BIN / "dvc"), *args], cwd, check=check)


def planned_jobs(cwd: Path, *args: str) -> list[dict]:
    """The jobs `snakemake -n -p` would run: [{rule, outputs, command}], `all` left out."""
    out = snakemake(cwd, "-n", "-p", "--cores", "1", *args).stdout
    jobs, current = [], None
    for line in out.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):$", line)
        if match:
            current = {"rule": match.group(1), "inputs": [], "outputs": [], "command": None}
            jobs.append(current)
        elif current is not None and line.strip().startswith("input:"):
            current["inputs"] = [p.strip() for p in line.split(":", 1)[1].split(",")]
        elif current is not None and line.strip().startswith("output:"):
            current["outputs"] = [p.strip() for p in line.split(":", 1)[1].split(",")]
        elif current is not None and line.startswith("Shell command:"):
            current["command"] = line.split(":", 1)[1].strip()
    return [job for job in jobs if job["rule"] != "all"]


def planned_rules(cwd: Path, *args: str) -> list[str]:
    return sorted(job["rule"] for job in planned_jobs(cwd, *args))


# --- the whole pipeline at test size: what the Snakemake and DVC modules share (tests/test_pipeline_*.py) ---

EVALUATION_AND_REPORTS = {"evaluate", "summarize", "dataset_report", "index_report"}
TRAINING_AND_AFTER = {"train"} | EVALUATION_AND_REPORTS
REPORTS = {"dataset_report", "index_report"}
MODELS = ("baseline", "hcmi", "hcmi-no-frame-word")  # tests/fixtures/tiny.yaml: models and the ablation
NOT_METRICS = {"run", "provenance", "model_provenance"}  # what made a result, not the result

LOSS_LINE = "return LossResult(total, parts, stats, latent)"
LOSS_LINE_EDITED = "return LossResult(total * 1.0, parts, stats, latent)"  # a code change that computes the same


def metrics_of(workdir: Path, model: str, seed: int | None = None) -> dict:
    path = f"data/results/synthetic/{model}/" + (f"seeds/{seed}/metrics.json" if seed is not None else "metrics.json")
    return json.loads((workdir / path).read_text())


def provenance_of(workdir: Path, model: str, seed: int | None = None) -> dict:
    path = f"data/results/synthetic/{model}/" + (f"seeds/{seed}/" if seed is not None else "") + "provenance.json"
    return json.loads((workdir / path).read_text())


def model_of(workdir: Path, model: str, seed: int = 0) -> dict:
    from hcmi import checkpoints

    return checkpoints.load(workdir / f"data/checkpoints/synthetic/{model}/seeds/{seed}/model.pt")


def hcmi(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["hcmi", *args], workdir, check=check)


def nothing_to_do(workdir: Path, *args: str) -> bool:
    result = snakemake(workdir, "-n", "--cores", "1", "all", *args)
    return "Nothing to be done" in result.stdout + result.stderr


@contextmanager
def edited(path: Path, old: str, new: str):
    """A source file with one edit, restored afterwards."""
    original = path.read_text()
    assert old in original, f"{old!r} not in {path}"
    path.write_text(original.replace(old, new, 1))
    try:
        yield
    finally:
        path.write_text(original)


def run_by_hand(tmp_path: Path, workdir: Path, params: dict, models: tuple[str, ...]) -> Path:
    """The steps a workflow ran, launched by hand with `hcmi` into a data root of their own on the workflow's raw
    data and frame caches: the backbone's pretraining, then training and evaluation of each model at seed 0. The shell
    says otherwise about threads (the test session's OMP_NUM_THREADS=1 replaced, MKL's and OpenMP's set to 2): hcmi
    applies compute.train_threads itself."""
    by_hand = tmp_path / "by_hand"
    (by_hand / "data").mkdir(parents=True)
    for sub in ("raw", "frames"):
        (by_hand / "data" / sub).symlink_to(workdir / "data" / sub)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    shell = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    common = ["hcmi", "--params", str(params_file), "--data-root", str(by_hand / "data")]
    run([*common, "weights"], tmp_path, env=shell)  # its own backbone weights, which must be the workflow's bytes
    for model in models:
        for step in ("train", "evaluate"):
            run([*common, step, "--dataset", "synthetic", "--model", model, "--seed", "0"], tmp_path, env=shell)
    return by_hand


PRETRAINED = "data/weights/files/hcmi-tiny__synthetic-stills.pt"


def assert_same_run(launched: Path, by_hand: Path, params: dict, models: tuple[str, ...]) -> None:
    """What a workflow made and what the same steps made by hand: the pretrained backbone's bytes, every tensor of
    each model's weights and every metric of its evaluation, bit for bit."""
    import torch

    made = provenance_of(by_hand, models[0], 0)
    assert made["provenance"]["runtime"]["threads"] == params["compute"]["train_threads"]
    assert (by_hand / PRETRAINED).read_bytes() == (launched / PRETRAINED).read_bytes(), \
        "the pretrained backbone: the same bytes however it is launched"
    for model in models:
        ours, hand = model_of(launched, model), model_of(by_hand, model)
        assert set(ours["state_dict"]) == set(hand["state_dict"]), model
        for key, value in ours["state_dict"].items():
            assert torch.equal(hand["state_dict"][key], value), (model, key)
        ours, theirs = metrics_of(launched, model, 0), metrics_of(by_hand, model, 0)
        compared = set(ours) - NOT_METRICS
        assert {"t2v", "v2t", "t2v_dsl", "v2t_dsl", "t2v_dsl_bank", "counts"} <= compared, compared
        assert model == "baseline" or {"levels", "hard_distractors"} <= compared, compared  # HCMI's levels
        assert compared == set(theirs) - NOT_METRICS
        for key in sorted(compared):
            assert ours[key] == theirs[key], (model, key)
