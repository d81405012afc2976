"""Checkpoint files: atomic writes, weights-only loading, clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch
from train_problem import AffineFlow, nll_loss

from pa_recon.errors import PAReconError
from pa_recon.train import Trainer, inference_state_dict, load_checkpoint, save_checkpoint
from pa_recon.train import checkpoint as checkpoint_module


def test_round_trip(tmp_path):
    state = {"model": {"w": torch.arange(3.0)}, "step": 7, "rng": (1, (2, 3), None), "name": "x"}
    save_checkpoint(tmp_path / "sub" / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "sub" / "c.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["step"] == 7 and loaded["rng"] == (1, (2, 3), None) and loaded["name"] == "x"


def test_failed_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})

    def disk_full(obj, f):
        f.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_unpicklable_state_leaves_no_temporary_file(tmp_path):
    with pytest.raises((pickle.PicklingError, AttributeError)):
        save_checkpoint(tmp_path / "c.pt", {"fn": lambda: 0})
    assert list(tmp_path.iterdir()) == []


def test_trainer_checkpoint_loads_weights_only(data, make_config, tmp_path):
    train, val = data
    trainer = Trainer(AffineFlow(), make_config(max_steps=10, ema_decay=0.9), nll_loss, train, val)
    trainer.fit()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert set(state) == {"model", "optimizer", "scheduler", "scaler", "ema", "step", "epoch", "rng", "best_metric",
                          "meters", "metrics", "run_id", "finished", "config"}
    assert state["config"]["ema_decay"] == 0.9 and state["step"] == 10 and state["run_id"] is None
    weights = inference_state_dict(state)
    assert torch.equal(weights["a"], trainer.ema.shadow["a"])
    assert not torch.equal(weights["a"], trainer.model.a.detach())


class Payload:
    """An arbitrary class: unpickling it could run code, so weights-only loading must refuse it."""


@pytest.mark.parametrize("write", [lambda path: torch.save({"model": Payload()}, path),
                                   lambda path: path.write_text("geometry:\n  grid: {nx: 64}\n")],
                         ids=["other objects", "a text file"])
def test_objects_other_than_tensors_and_other_files_are_refused_in_one_line(tmp_path, write):
    path = tmp_path / "evil.pt"
    write(path)
    with pytest.raises(PAReconError, match=r"evil\.pt: not a readable checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)


def test_truncated_missing_and_non_dict_files(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.zeros(100)})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(PAReconError, match=r"c\.pt: not a readable checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    with pytest.raises(PAReconError, match=r"nope\.pt: checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "run").mkdir()
    with pytest.raises(PAReconError, match=r"run: is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path / "run")
    save_checkpoint(path, [torch.zeros(1)])
    with pytest.raises(PAReconError, match="holds a list"):
        load_checkpoint(path)
