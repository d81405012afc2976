"""Affine injector (SRFlow): a per-element affine map whose scale and shift depend on the condition only."""

from __future__ import annotations

import torch
from torch import Tensor

from pa_recon.flows.base import InvertibleModule, check_cond, check_image, exact_arithmetic, sum_per_sample
from pa_recon.flows.coupling import ScaleKind, bounded_log_scale
from pa_recon.flows.subnets import SubnetConfig, make_subnet


class AffineInjector(InvertibleModule):
    """z = x * exp(log_s(c)) + t(c) on (B, channels, H, W); (log_s, t) from the condition c (B, cond_channels, H, W)."""

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        subnet: SubnetConfig = SubnetConfig(),
        scale: ScaleKind = "tanh",
        scale_bound: float = 2.0,
    ) -> None:
        super().__init__()
        self.channels, self.cond_channels, self.scale, self.scale_bound = channels, cond_channels, scale, scale_bound
        self.net = make_subnet(subnet, cond_channels, 2 * channels)

    def _params(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        check_image(x, self.channels)
        raw, t = self.net(check_cond(cond, x, self.cond_channels)).to(x.dtype).chunk(2, dim=1)
        return bounded_log_scale(raw, self.scale, self.scale_bound), t

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_s, t = self._params(x, cond)
        with exact_arithmetic(x):
            z = x * torch.exp(log_s) + t
        return z, sum_per_sample(log_s)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_s, t = self._params(z, cond)
        with exact_arithmetic(z):
            x = (z - t) * torch.exp(-log_s)
        return x, -sum_per_sample(log_s)
