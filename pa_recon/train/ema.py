"""Exponential moving average (EMA) of a model's parameters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class EMA:
    """Shadow copies of the trainable parameters, ``shadow ← d·shadow + (1 − d)·param`` after each step.

    The decay warms up as ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the average is not
    dominated by the initial weights (which data-dependent initialisations such as ActNorm overwrite on the
    first batch). Buffers are not averaged: the model's own buffers are used with the EMA parameters.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow weights towards the model's current parameters."""
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach(), 1.0 - d)
        self.updates += 1

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Swap the EMA weights into ``model`` for the duration of the block, then restore the trained ones."""
        params = dict(model.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.shadow}
        with torch.no_grad():
            for name, value in self.shadow.items():
                params[name].copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    params[name].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        """``{"shadow": {name: tensor}, "updates": int}`` (the decay comes from the config)."""
        return {"shadow": dict(self.shadow), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the shadow weights and update count saved by :meth:`state_dict`."""
        mismatch = set(self.shadow) ^ set(state["shadow"])
        if mismatch:
            raise KeyError(f"EMA state does not match the model's parameters: {sorted(mismatch)}")
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
        self.updates = int(state["updates"])
