"""TrainConfig: reading from a mapping and rejecting bad values with the field named."""

from __future__ import annotations

import numpy as np
import pytest

from pa_recon.errors import PAReconError
from pa_recon.train import TrainConfig


def test_from_dict_round_trip():
    config = TrainConfig.from_dict({"epochs": 3, "lr": 2e-4, "schedule": "step", "tracking": False})
    assert config.epochs == 3 and config.max_steps is None
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"max_steps": 10, "width": 3}, "width"),
        ({}, "max_steps"),
        ({"max_steps": 10, "epochs": 2}, "max_steps"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 10, "batch_size": True}, "batch_size"),
        ({"max_steps": 10, "lr": float("nan")}, "lr"),
        ({"max_steps": 10, "lr": "1e-3"}, "lr"),
        ({"max_steps": 10, "schedule": "linear"}, "schedule"),
        ({"max_steps": 10, "amp": "fp8"}, "amp"),
        ({"max_steps": 10, "device": "tpu"}, "device"),
        ({"max_steps": 10, "ema_decay": 1.0}, "ema_decay"),
        ({"max_steps": 10, "val_every": -1}, "val_every"),
        ({"max_steps": 10, "tracking": "no"}, "tracking"),
        ({"max_steps": 10, "experiment": ""}, "experiment"),
    ],
)
def test_bad_values_name_the_field(values, field):
    with pytest.raises(PAReconError) as info:
        TrainConfig.from_dict(values)
    assert info.value.field == field


def test_numpy_values_are_accepted_and_stored_as_python_numbers():
    """A config built from numpy values equals the plain one and stores Python ints and floats (checkpoints load
    their config with ``weights_only=True``, which refuses numpy scalars)."""
    config = TrainConfig(max_steps=np.int64(10), batch_size=np.int32(4), lr=np.float32(0.5), seed=np.uint8(3),
                         ema_decay=np.float64(0.9))
    assert config == TrainConfig(max_steps=10, batch_size=4, lr=0.5, seed=3, ema_decay=0.9)
    assert [type(getattr(config, name)) for name in ("max_steps", "batch_size", "lr", "seed", "ema_decay")] == [
        int, int, float, int, float]


@pytest.mark.parametrize(("values", "message"), [
    ({"max_steps": 0}, "must be an integer >= 1, got 0"),
    ({"max_steps": 10, "val_every": 2.0}, "must be an integer >= 0, got 2.0"),
    ({"max_steps": 10, "lr": 0}, "must be a finite number > 0, got 0"),
    ({"max_steps": 10, "decay_gamma": 1.5}, "must be a finite number in (0, 1], got 1.5"),
    ({"max_steps": 10, "ema_decay": 1.0}, "must be a finite number in [0, 1), got 1.0"),
    ({"max_steps": 10, "min_lr_ratio": np.float64(-0.5)}, "must be a finite number in [0, 1], got -0.5"),
])
def test_bad_numbers_state_what_is_expected(values, message):
    with pytest.raises(PAReconError) as info:
        TrainConfig.from_dict(values)
    assert info.value.message == message
