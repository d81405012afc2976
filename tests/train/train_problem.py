"""A tiny problem for trainer tests: a 2-parameter affine flow fitted to 1-D Gaussian data."""

from __future__ import annotations

import math

import torch
from torch import nn

TRUE_SCALE, TRUE_SHIFT = 3.0, 2.0


class AffineFlow(nn.Module):
    """``x = exp(a)·z + b`` with ``z ~ N(0, 1)``, so ``log p(x) = log N((x − b)·exp(−a)) − a``."""

    def __init__(self, a: float = 0.3, b: float = -0.5) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of ``x (n, 1)`` as ``(n,)``."""
        z = (x[:, 0] - self.b) * torch.exp(-self.a)
        return -0.5 * z**2 - 0.5 * math.log(2 * math.pi) - self.a


def nll_loss(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean NLL of the batch with a little noise added, so training draws from the global RNG."""
    logp = model(batch + 0.05 * torch.randn_like(batch))
    return -logp.mean(), {"logp_min": logp.detach().min().item()}


def images(model: nn.Module) -> torch.Tensor:
    """Four 6×5 grey images whose brightness depends on the model and on the RNG."""
    return torch.sigmoid(model.b + torch.randn(4, 1, 6, 5))
