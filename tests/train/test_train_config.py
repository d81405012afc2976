"""TrainConfig: reading from a mapping and rejecting bad values with the field named."""

from __future__ import annotations

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
