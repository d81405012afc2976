"""Dequantization of n-bit integer data x in {0, ..., 2^n - 1} (B, C, H, W) to continuous y in [0, 1).

A dequantizer returns (y, log_weight) such that log P(x) >= E[log p(y) + log_weight] (and the K-sample
log-mean-exp of log p(y_k) + log_weight_k is a tighter bound). With y = (x + u) / 2^n, u ~ q(u | x) on [0, 1)^D:
log_weight = -D n log 2 - log q(u | x), where -D n log 2 is the log|det| of the division by 2^n.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pa_recon.flows.base import Inverse, SequentialFlow, check_image, standard_normal_log_prob
from pa_recon.flows.coupling import AffineCoupling
from pa_recon.flows.pretransform import LogitTransform
from pa_recon.flows.subnets import SubnetConfig, make_subnet


class UniformDequantization(nn.Module):
    """y = (x + u) / 2^n with u ~ U[0, 1)^D, so log q(u | x) = 0 and log_weight = -D n log 2."""

    def __init__(self, n_bits: int = 8) -> None:
        super().__init__()
        self.n_bits, self.levels = n_bits, 2**n_bits

    def _log_weight(self, x: Tensor) -> Tensor:
        return x.new_full((x.shape[0],), -x[0].numel() * self.n_bits * math.log(2.0))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, H, W) integer-valued -> (y in [0, 1) (B, C, H, W), log_weight (B,))."""
        check_image(x, None)
        return (x + torch.rand_like(x)) / self.levels, self._log_weight(x)

    def midpoint(self, x: Tensor) -> Tensor:
        """The deterministic dequantization (x + 1/2) / 2^n (used by encode)."""
        return (x + 0.5) / self.levels

    def quantize(self, y: Tensor) -> Tensor:
        """Back to integer values: floor(y * 2^n), clamped to {0, ..., 2^n - 1}."""
        return torch.floor(y * self.levels).clamp(0, self.levels - 1)


class VariationalDequantization(UniformDequantization):
    """Flow++ variational dequantization: u = sigmoid(g(eps; h(x))), eps ~ N(0, I), with g a stack of conditional
    checkerboard couplings and h a small network of the rescaled data; log q(u | x) by change of variables.
    """

    def __init__(
        self,
        channels: int,
        n_bits: int = 8,
        steps: int = 4,
        subnet: SubnetConfig = SubnetConfig(hidden=32, blocks=1),
        features: int = 16,
    ) -> None:
        super().__init__(n_bits)
        self.channels = channels
        self.context = make_subnet(subnet, channels, features, zero_init=False)
        couplings = [
            AffineCoupling(channels, "checkerboard", i % 2, subnet, cond_channels=features) for i in range(steps)
        ]
        self.noise_flow = SequentialFlow([*couplings, Inverse(LogitTransform(0.0, channels))])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, H, W) integer-valued -> (y in [0, 1) (B, C, H, W), log_weight (B,))."""
        check_image(x, self.channels)
        context = self.context(2.0 * x / (self.levels - 1) - 1.0)
        eps = torch.randn_like(x)
        u, logdet = self.noise_flow(eps, context)
        log_q = standard_normal_log_prob(eps) - logdet
        return (x + u) / self.levels, self._log_weight(x) - log_q
