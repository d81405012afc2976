"""A loss that stops a training run part-way, as Ctrl-C, a crash or a killed job would (for resume tests)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pa_recon.train import LossFn


def interrupted_after(calls: int, loss_fn: LossFn,
                      error: BaseException | type[BaseException] = KeyboardInterrupt) -> LossFn:
    """``loss_fn`` that raises ``error`` at its ``calls``-th training call, so ``calls − 1`` steps complete (only
    calls with gradients enabled count: the validation passes do not)."""
    seen = 0

    def loss(model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        nonlocal seen
        if torch.is_grad_enabled():
            seen += 1
            if seen == calls:
                raise error
        return loss_fn(model, batch)

    return loss
