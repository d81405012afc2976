"""A loss that stops a training run part-way, as Ctrl-C or a killed job would (for resume tests)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pa_recon.train import LossFn


def interrupted_after(calls: int, loss_fn: LossFn) -> LossFn:
    """``loss_fn`` that raises KeyboardInterrupt at its ``calls``-th training call (with gradients enabled; the
    validation passes do not count)."""
    seen = 0

    def loss(model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        nonlocal seen
        if torch.is_grad_enabled():
            seen += 1
            if seen == calls:
                raise KeyboardInterrupt
        return loss_fn(model, batch)

    return loss
