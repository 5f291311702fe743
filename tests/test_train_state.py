"""The resumable state of a training run (hcmi/train_state.py) on its own: what it restores, and when it refuses.
A whole run killed and resumed is tested end to end in test_train.py (bit-identical to an uninterrupted run)."""

import torch

from hcmi import train_state


def parts(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    return model, optimizer, scheduler


def one_step(model, optimizer, scheduler) -> None:
    model(torch.randn(5, 4)).square().sum().backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def test_a_restored_state_continues_exactly_as_the_run_would_have(tmp_path):
    path = tmp_path / "last.pt"
    model, optimizer, scheduler = parts(0)
    one_step(model, optimizer, scheduler)
    progress = train_state.Progress(step=1, best_score=12.5, train_rows=[{"step": 1, "loss": 0.5}])
    train_state.save(path, "run-a", progress, model, optimizer, scheduler)
    one_step(model, optimizer, scheduler)  # the run goes on: the reference
    expected = {name: value.clone() for name, value in model.state_dict().items()}

    fresh = parts(1)  # another process: other weights, other random state
    restored = train_state.restore(path, "run-a", *fresh)
    assert restored == progress
    one_step(*fresh)
    for name, value in fresh[0].state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert train_state.saved_step(path) == 1


def test_another_runs_or_a_finished_or_a_broken_state_is_never_loaded(tmp_path):
    path = tmp_path / "last.pt"
    assert train_state.restore(path, "run-a", *parts(0)) is None and train_state.saved_step(path) == "none written yet"
    model, optimizer, scheduler = parts(0)
    train_state.save(path, "run-a", train_state.Progress(step=3), model, optimizer, scheduler)
    other = parts(1)
    before = {name: value.clone() for name, value in other[0].state_dict().items()}
    assert train_state.restore(path, "run-b", *other) is None  # another configuration, data or code
    train_state.save(path, "run-a", train_state.Progress(step=3), model, optimizer, scheduler, finished=True)
    assert train_state.restore(path, "run-a", *other) is None  # a finished run trains again from scratch
    path.write_bytes(path.read_bytes()[:100])  # cut short, as by a full disk
    assert train_state.restore(path, "run-a", *other) is None
    for name, value in other[0].state_dict().items():
        assert torch.equal(value, before[name]), "nothing is loaded from a refused state"
