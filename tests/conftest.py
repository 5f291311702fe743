"""Shared test fixtures. The network is blocked for the test process and every process it starts."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
NETGUARD = Path(__file__).resolve().parent / "netguard"

sys.path.insert(0, str(NETGUARD))
import sitecustomize  # noqa: E402,F401  (installs the socket guard in this process)

from hcmi import numerics  # noqa: E402

# the kernels of params.yaml's compute.numerics, pinned before any test computes (the command line does the same)
numerics.pin(yaml.safe_load((REPO / "params.yaml").read_text())["compute"]["numerics"])

# child processes (Snakemake, DVC, papermill kernels, hcmi) get the same guard and stay offline
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETGUARD), os.environ.get("PYTHONPATH")]))
# the environment's console scripts (hcmi, snakemake, dvc) come first, even when the venv is not activated
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
for _role in ("AUTHOR", "COMMITTER"):  # tests commit in scratch repositories; CI machines have no git identity
    os.environ.setdefault(f"GIT_{_role}_NAME", "hcmi tests")
    os.environ.setdefault(f"GIT_{_role}_EMAIL", "tests@hcmi.invalid")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def tiny_params_dict() -> dict:
    """params.yaml with the test-size overrides of tests/fixtures/tiny.yaml merged in."""
    from hcmi.config import deep_merge

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    return deep_merge(base, yaml.safe_load((REPO / "tests/fixtures/tiny.yaml").read_text()))


# The backbone's pretraining in 3 steps instead of 64, for tests that need its weights to exist, not to be good
QUICK_PRETRAINING = {"pretrain": {"images": 256, "epochs": 1}}


@pytest.fixture
def tiny_params():
    from hcmi.steps.common import validate_params
    from hcmi.config import Params

    raw = tiny_params_dict()
    validate_params(raw, "tiny params")
    return Params(raw, "tiny params")


def tiny_params_from(raw: dict):
    """Validated parameters from a dict (unrestricted: tests call step functions directly)."""
    from hcmi.config import Params
    from hcmi.steps.common import validate_params

    validate_params(raw, "test params")
    return Params(raw, "test params")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, worker_id):
    """The tiny synthetic benchmark, generated, parsed and sampled once per session by the steps' own functions
    (read-only for tests). Under pytest-xdist the workers share one copy: the first to ask builds it in the session's
    temporary folder, under a file lock, and the others wait for it and reuse it."""
    from filelock import FileLock

    from hcmi.paths import Layout

    params = tiny_params_from(tiny_params_dict())
    if worker_id == "master":  # no xdist: this process's own temporary folder
        return params, build_tiny_data(params, Layout(tmp_path_factory.mktemp("tiny") / "data"))
    shared = tmp_path_factory.getbasetemp().parent / "tiny-shared"  # the session's folder, above each worker's
    with FileLock(f"{shared}.lock"):
        layout = Layout(shared / "data")
        if not (shared / "complete").exists():
            build_tiny_data(params, layout)
            (shared / "complete").touch()
    return params, layout


def build_tiny_data(params, layout):
    from hcmi.steps import download, parse, sample, weights

    download.run(params, layout, "synthetic")
    parse.run(params, layout, "synthetic")
    for split in ("train", "val", "test"):
        sample.run(params, layout, "synthetic", split)
    weights.run(params, layout)  # the backbone pretrained on still images (backbone.pretrained: synthetic-stills)
    return layout


def linked_root(tmp_path: Path, layout, name: str = "data") -> Path:
    """A fresh data root whose raw data, frame caches and weights are the session's tiny benchmark (the weights
    files linked, the weights record copied: a test that runs `hcmi weights` again changes only its own root)."""
    import shutil

    root = tmp_path / name
    root.mkdir()
    for sub in ("raw", "frames"):
        (root / sub).symlink_to(layout.root / sub)
    files = root / "weights" / "files"
    files.mkdir(parents=True)
    for path in layout.weights_store().iterdir():
        (files / path.name).symlink_to(path)
    shutil.copy2(layout.weights_manifest(), root / "weights" / "backbone.json")
    return root


def require_slurm_plugin():
    """The Snakemake SLURM executor plugin: skipped without it on a developer's machine, a failure under CI (CI=true),
    where the cluster tests must run."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI runs the SLURM tests, but the executor plugin is missing: {exc} "
                        "(pip install -e '.[dev]' installs it)", pytrace=False)
        pytest.skip(f"snakemake-executor-plugin-slurm is not installed: {exc}", allow_module_level=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node SLURM cluster for the session (tests/slurm_cluster.py): the machine's own when one runs, otherwise
    Debian's packages, installed when missing, started from a generated configuration and stopped at the end.
    Skipped only where SLURM can be neither installed nor started (no apt-get, not root), and never under CI
    (CI=true), where that is a failure."""
    from slurm_cluster import ClusterUnavailable, one_node_cluster

    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(one_node_cluster())
        except ClusterUnavailable as reason:
            if os.environ.get("CI", "").lower() in ("true", "1"):
                pytest.fail(f"CI runs the SLURM tests, but no cluster can be had here: {reason}")
            pytest.skip(f"no SLURM cluster: {reason}")
        yield cluster


# The modules that take longest, longest first (measured with `pytest --durations`): pytest-xdist hands each worker
# whole modules (--dist loadfile) in collection order, so starting these first keeps a long one from being the last
# left running on one worker while the other is idle. The rest follow in their usual order.
LONGEST_FIRST = ("test_pipeline_dvc.py", "test_pipeline_snakemake.py", "test_real_datasets_e2e.py", "test_slurm.py",
                 "test_gpu_check.py", "test_golden.py", "test_train.py", "test_bench.py", "test_recovery.py",
                 "test_pretrain.py", "test_search.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module's tests keep their order
