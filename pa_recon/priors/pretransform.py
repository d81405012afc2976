"""The priors' pre-transform: a logit that accepts every real pixel value, so ``nll(x)`` is defined for any ``x``.

Inside ``[-m, 1 + m]`` it is the RealNVP logit ``y = logit(alpha + (1 - 2 alpha) x)``. That logit is only defined
on ``(-a, 1 + a)`` with ``a = alpha / (1 - 2 alpha)``, so below ``-m`` the image value is first squashed by
``x -> -m - s tanh((-m - x) / s)`` (and symmetrically above ``1 + m``), with ``m = s = a / 2``. The squash has
slope 1 and curvature 0 at the knots, so the map and its log-derivative are smooth (C¹) everywhere, and far out
``y`` is affine in ``x`` with slope ``2 / s`` — a flow density there keeps Gaussian-like tails in ``x`` instead
of a hard wall. The map is a strictly increasing bijection from the real line onto the real line, computed in
log space on both branches so that neither direction loses precision, and it is odd about ``x = 1/2``:
``T(1 - x) = -T(x)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from pa_recon.errors import PAReconError
from pa_recon.flows.base import InvertibleModule, check_image, exact_arithmetic, sum_per_sample


class SoftLogit(InvertibleModule):
    """Elementwise ``T: R -> R`` on ``(B, C, H, W)`` images (see the module docstring), with its log|det|.

    ``alpha`` in ``(0, 0.5)`` is the logit's margin (RealNVP uses 0.05): pixel values 0 and 1 map to
    ``∓logit(alpha)``. ``identity_range`` is ``(-m, 1 + m)``, where ``T`` is exactly the plain logit.
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0.0 < alpha < 0.5:
            raise PAReconError(f"alpha must lie in (0, 0.5), got {alpha}", field="alpha")
        self.alpha = alpha
        self.gain = 1.0 - 2.0 * alpha
        self.margin = 0.5 * alpha / self.gain
        self.width = self.margin
        # p = 2 * gain * width * sigmoid(-2u) on the squashed branch; y_knot = T(-m).
        self.log_p_scale = math.log(2.0 * self.gain * self.width)
        p_knot = alpha - self.gain * self.margin
        self.y_knot = math.log(p_knot) - math.log1p(-p_knot)

    @property
    def identity_range(self) -> tuple[float, float]:
        """The image values ``(-m, 1 + m)`` on which ``T`` is the plain logit (no squashing)."""
        return (-self.margin, 1.0 + self.margin)

    def _lower_half(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``T`` and ``log T'`` elementwise for ``x <= 1/2``."""
        squashed = x < -self.margin
        u = torch.clamp((-self.margin - x) / self.width, min=0.0)
        log_p_squashed = self.log_p_scale + F.logsigmoid(-2.0 * u)
        log_p = torch.where(squashed, log_p_squashed, torch.log(self.alpha + self.gain * x.clamp(min=-self.margin)))
        log_1mp = torch.log1p(-log_p.exp())
        # log sech²(u): the squash's log-slope (0 at and inside the knot).
        log_slope = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return log_p - log_1mp, math.log(self.gain) - log_p - log_1mp + log_slope

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_image(x, None)
        with exact_arithmetic(x):
            upper = x > 0.5
            y, log_deriv = self._lower_half(torch.where(upper, 1.0 - x, x))
            return torch.where(upper, -y, y), sum_per_sample(log_deriv)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_image(z, None, "z")
        with exact_arithmetic(z):
            upper = z > 0.0
            y = torch.where(upper, -z, z)
            plain = (torch.sigmoid(y) - self.alpha) / self.gain
            # Squashed branch: sigmoid(-2u) = q = sigmoid(y) / (2 gain width), so u = (log(1 - q) - log q) / 2.
            log_q = F.logsigmoid(y.clamp(max=self.y_knot)) - self.log_p_scale
            u = 0.5 * (torch.log1p(-log_q.exp()) - log_q)
            x = torch.where(y < self.y_knot, -self.margin - self.width * u, plain)
            x = torch.where(upper, 1.0 - x, x)
            _, logdet = self.forward(x)
        return x, -logdet
