"""Only a checkout worked before: the schema was a symlink into workflow/ and the notebooks were found through the
source tree. A wheel built from the repository, installed into a fresh virtual environment, must validate params and
render a report from result files by itself."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import tomllib

import yaml

from conftest import REPO, tiny_params_dict
from test_reporting import msrvtt_params

TIMEOUT_S = 300


def test_an_installed_wheel_validates_params_and_renders_a_report(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    for folder in ("hcmi", "notebooks"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, timeout=TIMEOUT_S)
    [wheel] = wheels.glob("hcmi-*.whl")
    fresh = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=TIMEOUT_S)
    purelib = Path(subprocess.run([str(fresh / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                   "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(purelib), str(wheel)],
                   check=True, capture_output=True, timeout=TIMEOUT_S)
    # the dependencies (torch, papermill, ...) come from this environment; hcmi itself only from the wheel
    dependencies = sysconfig.get_paths()["purelib"]
    (purelib / "dependencies.pth").write_text(dependencies + "\n")

    work = tmp_path / "elsewhere"  # not the checkout: nothing may be found through the source tree
    work.mkdir()
    python = str(fresh / "bin/python")
    where = subprocess.run([python, "-c", "import hcmi; print(hcmi.__file__)"], cwd=work, capture_output=True,
                           text=True, check=True).stdout
    assert where.startswith(str(purelib)), where

    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict()))
    check = subprocess.run([python, "-m", "hcmi.cli", "--params", str(params_file), "check"], cwd=work,
                           capture_output=True, text=True, timeout=TIMEOUT_S)
    assert check.returncode == 0 and "params OK" in check.stdout, check.stderr
    bad = tiny_params_dict()
    bad["train"]["lrr"] = 1
    params_file.write_text(yaml.safe_dump(bad))
    check = subprocess.run([python, "-m", "hcmi.cli", "--params", str(params_file), "check"], cwd=work,
                           capture_output=True, text=True, timeout=TIMEOUT_S)
    assert check.returncode == 2 and "unknown key 'train.lrr'" in check.stderr

    results_params, layout = msrvtt_params(work)
    # nbconvert's templates are data files of this environment's share/jupyter, which a real install would copy
    env = {**os.environ, "JUPYTER_PATH": str(Path(sys.prefix) / "share/jupyter")}
    report = subprocess.run([python, "-m", "hcmi.cli", "--params", str(results_params), "--data-root",
                             str(layout.root), "report", "--dataset", "msrvtt"], cwd=work, capture_output=True,
                            text=True, timeout=TIMEOUT_S, env=env)
    assert report.returncode == 0, report.stderr[-3000:]
    html = layout.report("msrvtt").read_text()
    assert "Against the published figures" in html and "54.5 ± 0.5" in html


def test_every_package_of_the_source_tree_is_in_the_wheel():
    """pyproject.toml lists the packages (the notebooks folder is mapped into the package): a new subpackage must be
    added there, or an installed hcmi would lack it."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "hcmi").rglob("__init__.py")}
    data = {"hcmi.model.configs"}  # folders of data files the code reads
    assert found | data | {"hcmi.notebooks"} == listed
