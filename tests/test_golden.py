"""The golden fingerprints (tests/golden/tiny.json, tests/golden.py): the tiny pipeline, run through the command line in
an environment that sets every kernel variable otherwise (another machine, emulated), gives the pinned benchmark,
frame caches, weights and metrics bit for bit; unpinned, the same environment gives other weights, so these tests
can fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import golden

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def foreign_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden") / "data"
    env = {**os.environ, **golden.FOREIGN_ENVIRONMENT}
    golden.run_pipeline(root, env)
    return root, env, golden.fingerprints(root)


@pytest.fixture(scope="module")
def expected():
    if golden.level() is None:
        pytest.fail(golden.no_section_message())
    return golden.expected_fingerprints(golden.pinned())


def test_one_section_serves_every_x86_64_v3_machine_under_exactly_the_portable_settings():
    """The fingerprints were pinned under the settings `portable` sets now: a change of those settings (another MKL
    branch, another ISA cap) changes every float, so it must come with a re-pin."""
    from hcmi import numerics

    section = golden.pinned()
    assert section["level"] == golden.LEVEL
    assert section["settings"] == numerics.SETTINGS["portable"]
    assert section["settings"]["MKL_CBWR"].startswith("COMPATIBLE")  # MKL's one branch that is the same on every vendor
    assert set(section) == {"level", "settings", "cpus", *golden.PARTS}


@pytest.mark.parametrize("part", ["benchmark", "frame_cache", "pretrained", "weights", "metrics"])
def test_the_tiny_pipeline_reproduces_its_golden_fingerprints_on_another_machine(foreign_run, expected, part):
    found = foreign_run[2]
    diff = golden.differences(expected[part], found[part], part)
    assert not diff, ("the numbers differ from tests/golden/tiny.json (re-pin only for a deliberate change: "
                      "docs/reproducibility.md):\n" + "\n".join(diff[:20]))


def test_unpinned_the_foreign_environment_gives_other_weights(foreign_run, expected, tmp_path):
    """The control: with compute.numerics native the emulated machine's kernels are used, and the weights differ."""
    root, env, _ = foreign_run
    other = tmp_path / "data"
    other.mkdir()
    for sub in ("raw", "frames", "weights"):
        (other / sub).symlink_to(root / sub)
    golden.hcmi(other, env, "train", "--dataset", "synthetic", "--model", "hcmi", "--seed", str(golden.SEED),
                settings=("compute.numerics=native", "train.epochs=2"))
    pinned_short = tmp_path / "pinned"
    pinned_short.mkdir()
    for sub in ("raw", "frames", "weights"):
        (pinned_short / sub).symlink_to(root / sub)
    golden.hcmi(pinned_short, env, "train", "--dataset", "synthetic", "--model", "hcmi", "--seed", str(golden.SEED),
                settings=("train.epochs=2",))
    model = ("checkpoints", "synthetic", "hcmi", "seeds", str(golden.SEED), "model.pt")
    assert golden.weights_fingerprint(other.joinpath(*model)) != golden.weights_fingerprint(pinned_short.joinpath(*model))


def hcmi_verify(root, env, *extra):
    command = [os.path.join(os.path.dirname(sys.executable), "hcmi"), "--params", "params.yaml", "--params",
               "tests/fixtures/tiny.yaml", "--data-root", str(root), *extra, "verify", "--dataset", "synthetic",
               "--model", "hcmi", "--seed", str(golden.SEED)]
    return subprocess.run(command, cwd=golden.REPO, env=env, capture_output=True, text=True, timeout=600)


def test_verify_reproduces_the_run_and_names_nothing_when_nothing_differs(foreign_run):
    root, env, _ = foreign_run
    done = hcmi_verify(root, env, "-v")
    assert done.returncode == 0, done.stderr
    assert "reproduced" in done.stderr
    assert "differ" not in done.stderr  # no parameter, code or environment item is said to differ


def test_verify_names_exactly_what_differs_when_the_metrics_do_not_reproduce(foreign_run, tmp_path):
    root, env, _ = foreign_run
    copy = tmp_path / "data"
    copy.mkdir()
    for sub in ("raw", "frames", "weights", "checkpoints"):
        (copy / sub).symlink_to(root / sub)
    results = copy / "results" / "synthetic" / "hcmi" / "seeds" / str(golden.SEED)
    results.mkdir(parents=True)
    original = root / "results" / "synthetic" / "hcmi" / "seeds" / str(golden.SEED)
    recorded = json.loads((original / "metrics.json").read_text())
    recorded["t2v"]["R1"] += 1.0
    (results / "metrics.json").write_text(json.dumps(recorded))
    made = json.loads((original / "provenance.json").read_text())
    made["provenance"]["environment"]["numerics"]["settings"]["MKL_CBWR"] = "AVX512,STRICT"
    made["provenance"]["environment"]["numerics"]["cpu"] = "Another CPU"
    (results / "provenance.json").write_text(json.dumps(made))
    done = hcmi_verify(copy, env)
    assert done.returncode == 1
    message = done.stderr
    assert "does not reproduce 1 recorded metric(s)" in message and "t2v.R1" in message
    named = [line.strip() for line in message.splitlines() if line.strip().startswith(("environment", "parameter"))]
    assert sorted(named) == sorted([
        "environment numerics.cpu: 'Another CPU' was recorded, " + repr(golden_cpu()) + " now",
        "environment numerics.settings.MKL_CBWR: 'AVX512,STRICT' was recorded, 'COMPATIBLE,STRICT' now",
    ])


def golden_cpu() -> str:
    from hcmi import numerics

    return numerics.cpu_model()


def test_verify_from_an_empty_folder_without_params_reevaluates_under_the_recorded_parameters(foreign_run, tmp_path):
    """Outside the checkout and with no params file: the declared defaults, overridden by the parameters the run's
    metrics.json recorded, so the run reproduces and nothing is said to differ."""
    root, env, _ = foreign_run
    env = {key: value for key, value in env.items() if key != "HCMI_PARAMS"}
    command = [os.path.join(os.path.dirname(sys.executable), "hcmi"), "--data-root", str(root), "-v", "verify",
               "--dataset", "synthetic", "--model", "hcmi", "--seed", str(golden.SEED)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "declared defaults" in done.stderr and "reproduced" in done.stderr
    assert "parameter " not in done.stderr  # every declared parameter as recorded
