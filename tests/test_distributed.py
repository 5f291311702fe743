"""Multi-process training (DDP over gloo on the CPU) must match one process with the same global batch."""

import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from conftest import linked_root, tiny_params_dict, tiny_params_from

from hcmi import checkpoints

TIMEOUT_S = 600


def train_command(params_file, root):
    return ["-m", "hcmi.cli", "--params", str(params_file), "--data-root", str(root), "train", "--dataset",
            "synthetic", "--model", "hcmi", "--seed", "0"]


def test_two_process_ddp_matches_single_process(tiny_data, tmp_path):
    _, layout = tiny_data
    raw = tiny_params_dict()
    raw["train"].update(epochs=2, batch_size=16, log_every=1)
    # the objective's discrete choices (latent positives, hardest negatives) flip on float-summation noise when the
    # tiny model's embeddings are near-ties, and a flip changes the loss by a step: they are compared in float64 at
    # one step in tests/test_gradcache.py; here the HCMI heads train with the plain hierarchical loss
    raw["variants"]["hcmi"] = {"denoise": {"method": "none"}, "enhance": {"method": "none"}}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    single, ddp = linked_root(tmp_path, layout, "single"), linked_root(tmp_path, layout, "ddp")

    one = subprocess.run([sys.executable, *train_command(params_file, single)], capture_output=True, text=True,
                         timeout=TIMEOUT_S)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          *train_command(params_file, ddp)], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert two.returncode == 0, two.stderr[-5000:]
    assert "2 process(es)" in two.stderr

    run_dir = "checkpoints/synthetic/hcmi/seeds/0"
    a = checkpoints.load(single / run_dir / "model.pt")
    b = checkpoints.load(ddp / run_dir / "model.pt")
    assert a["step"] == b["step"] and a["selected"] == b["selected"]
    # AdamW turns a gradient at float-noise level (e.g. a query of an attention layer over the near-identical frame
    # tokens of a randomly initialised backbone) into a step of about lr whose sign is the noise's: such elements
    # differ by up to lr x steps between any two summation orders. Tensors are compared by norm.
    for key, value in a["state_dict"].items():
        if value.is_floating_point():
            difference = (b["state_dict"][key] - value).norm()
            assert difference <= 1e-2 * value.norm() + 1e-4, (key, float(difference), float(value.norm()))
    log_a, log_b = pd.read_csv(single / run_dir / "train_log.csv"), pd.read_csv(ddp / run_dir / "train_log.csv")
    assert len(log_a) == len(log_b) == 12
    pd.testing.assert_series_equal(log_a["loss"], log_b["loss"], rtol=1e-4)


def test_more_gpus_than_present_is_a_clear_error(tiny_data, tmp_path):
    from hcmi.steps import train
    from hcmi.trainer import TrainingError

    raw = tiny_params_dict()
    raw["compute"]["train_gpus"] = 4
    params, layout = tiny_params_from(raw), tiny_data[1]
    with pytest.raises(TrainingError, match="compute.train_gpus=4"):
        train.run(params, layout, "synthetic", "hcmi", 0)


def test_several_gpus_relaunch_the_same_command_under_torchrun(monkeypatch, tiny_data):
    from hcmi.steps import train as train_module

    raw = tiny_params_dict()
    raw["compute"]["train_gpus"] = 2
    params, layout = tiny_params_from(raw), tiny_data[1]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(sys, "argv", ["hcmi", "train", "--dataset", "synthetic", "--model", "hcmi", "--seed", "0"])
    executed = {}

    def fake_execv(path, argv):
        executed["argv"] = argv
        raise SystemExit(0)

    monkeypatch.setattr(train_module.os, "execv", fake_execv)
    with pytest.raises(SystemExit):
        train_module.run(params, layout, "synthetic", "hcmi", 0)
    assert executed["argv"][1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert executed["argv"][6:] == ["hcmi.cli", "train", "--dataset", "synthetic", "--model", "hcmi", "--seed", "0"]
