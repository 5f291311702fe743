"""The package's layering is enforced, not just drawn: import-linter checks the contracts in pyproject.toml
(cli -> steps -> engine -> model | data -> runtime -> config -> files; the model reads no files; metrics are numpy
only), imports inside functions included."""

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

LINT = str(Path(sys.executable).parent / "lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(root), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run([LINT, "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300, env=env)


def test_the_layering_contracts_hold_with_no_exceptions():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
    assert "ignore_imports" not in (REPO / "pyproject.toml").read_text(), "no exceptions are listed"


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "hcmi", tmp_path / "hcmi", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "hcmi/data/frames.py", "a") as handle:  # the data layer reaching up into the engine
        handle.write("\n\ndef _upward():\n    from hcmi.scoring import score_split  # noqa: F401\n")
    result = lint(tmp_path)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout[-3000:]
    assert "hcmi.data.frames -> hcmi.scoring" in result.stdout
