"""Helpers for tests that run the real Snakefile and dvc.yaml in a scratch copy of the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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
