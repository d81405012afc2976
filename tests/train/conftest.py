"""Fixtures for the trainer tests: the data of the affine-flow problem and a short CPU config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from train_problem import TRUE_SCALE, TRUE_SHIFT

from pa_recon.train import TrainConfig


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = TRUE_SHIFT + TRUE_SCALE * torch.randn(320, 1, generator=g)
    return x[:256], x[256:]


@pytest.fixture
def make_config(tmp_path: Path):
    """``make_config(**overrides)``: a short, tracking-free CPU run writing under tmp_path."""

    def make(**overrides: Any) -> TrainConfig:
        values: dict[str, Any] = dict(out_dir=str(tmp_path / "run"), max_steps=40, batch_size=32, lr=0.05,
                                      warmup_steps=5, val_every=15, sample_every=0, checkpoint_every=10,
                                      log_every=7, device="cpu", progress=False, tracking=False)
        values.update(overrides)
        return TrainConfig(**values)

    return make
