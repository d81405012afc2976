"""Logit pre-transform for data in [0, 1]: x -> logit(alpha + (1 - 2 alpha) x), with its exact log|det|."""

from __future__ import annotations

import math

from torch import Tensor
from torch.nn import functional as F

from pa_recon.errors import PAReconError
from pa_recon.flows.base import InvertibleModule, check_image, exact_arithmetic, sum_per_sample


class LogitTransform(InvertibleModule):
    """Elementwise y = logit(p), p = alpha + (1 - 2 alpha) x, on (B, C, H, W) data in [0, 1].

    log|dy/dx| = log(1 - 2 alpha) - log p - log(1 - p); ``alpha`` > 0 keeps 0 and 1 finite (RealNVP uses 0.05).
    Its inverse with alpha = 0 is the sigmoid.
    """

    def __init__(self, alpha: float = 0.05, channels: int | None = None) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise PAReconError(f"alpha must lie in [0, 0.5), got {alpha}", field="alpha")
        self.alpha, self.channels = alpha, channels
        self.log_gain = math.log1p(-2.0 * alpha)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_image(x, self.channels)
        with exact_arithmetic(x):
            p = self.alpha + (1.0 - 2.0 * self.alpha) * x
            y = p.log() - (-p).log1p()
            logdet = sum_per_sample(self.log_gain - p.log() - (-p).log1p())
        return y, logdet

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_image(z, self.channels, "z")
        with exact_arithmetic(z):
            x = (z.sigmoid() - self.alpha) / (1.0 - 2.0 * self.alpha)
            logdet = sum_per_sample(F.logsigmoid(z) + F.logsigmoid(-z) - self.log_gain)
        return x, logdet
