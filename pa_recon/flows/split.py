"""Latent priors: a (conditional) diagonal Gaussian, and the multi-scale split that scores half the channels.

A split is a partition, not a volume change: x (B, C, H, W) -> kept (B, C - C//2, H, W) continues through the flow,
z (B, C//2, H, W) leaves it and is scored under the prior, whose mean and log-std may depend on the kept half and
on condition features.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from pa_recon.errors import PAReconError
from pa_recon.flows.base import LOG_2PI, Shape, check_cond, check_image, sum_per_sample
from pa_recon.flows.subnets import SubnetConfig, make_subnet


class GaussianPrior(nn.Module):
    """Diagonal Gaussian over (B, channels, H, W); standard normal when ``context_channels`` is 0, otherwise
    mean and log-std come from a sub-network of a context map (B, context_channels, H, W), zero-initialised so
    that a fresh prior is standard normal.
    """

    def __init__(self, channels: int, context_channels: int = 0, subnet: SubnetConfig = SubnetConfig()) -> None:
        super().__init__()
        self.channels, self.context_channels = channels, context_channels
        self.net = make_subnet(subnet, context_channels, 2 * channels) if context_channels else None

    def params(self, context: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log_std), broadcastable to ``like`` (B, channels, H, W)."""
        if self.net is None:
            zero = like.new_zeros(())
            return zero, zero
        if context is None:
            raise PAReconError("this prior needs a context feature map", field="cond")
        mean, log_std = self.net(context).to(like.dtype).chunk(2, dim=1)
        return mean, log_std

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Per-sample log density of ``z`` (B, channels, H, W): shape (B,)."""
        check_image(z, self.channels, "z")
        mean, log_std = self.params(context, z)
        eps = (z - mean) * torch.exp(-log_std)
        return sum_per_sample(-0.5 * eps * eps - log_std.expand_as(z)) - 0.5 * LOG_2PI * z[0].numel()

    def sample(self, like: Tensor, context: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        """Draw z of ``like``'s shape, dtype and device, with the standard deviation scaled by ``temperature``."""
        mean, log_std = self.params(context, like)
        return mean + temperature * torch.exp(log_std) * torch.randn_like(like)


class Split(nn.Module):
    """Send the last ``channels // 2`` channels out of the flow, scored under a prior.

    prior "standard": standard normal. prior "conditional": a learned Gaussian whose mean/log-std come from the kept
    half, concatenated with the condition features when ``cond_channels`` > 0.
    """

    scale_change = 0

    def __init__(
        self,
        channels: int,
        prior: Literal["standard", "conditional"] = "standard",
        cond_channels: int = 0,
        subnet: SubnetConfig = SubnetConfig(),
    ) -> None:
        super().__init__()
        if channels < 2 or prior not in ("standard", "conditional"):
            raise PAReconError(f"bad split settings: channels={channels}, prior={prior!r}")
        self.channels, self.n_out = channels, channels // 2
        self.n_kept = channels - self.n_out
        self.cond_channels = cond_channels if prior == "conditional" else 0
        context = self.n_kept + self.cond_channels if prior == "conditional" else 0
        self.prior = GaussianPrior(self.n_out, context, subnet)

    def _context(self, kept: Tensor, cond: Tensor | None) -> Tensor | None:
        if self.prior.context_channels == 0:
            return None
        if self.cond_channels == 0:
            return kept
        return torch.cat([kept, check_cond(cond, kept, self.cond_channels).to(kept.dtype)], dim=1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, C, H, W) -> (kept (B, C - C//2, H, W), z (B, C//2, H, W), log p(z | kept, cond) (B,))."""
        check_image(x, self.channels)
        kept, z = x[:, : self.n_kept], x[:, self.n_kept :]
        return kept, z, self.prior.log_prob(z, self._context(kept, cond))

    def inverse(
        self, kept: Tensor, z: Tensor | None, cond: Tensor | None = None, temperature: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """(kept, z) -> (x, log p(z | kept, cond)); z is drawn from the prior (at ``temperature``) when None."""
        check_image(kept, self.n_kept, "kept")
        context = self._context(kept, cond)
        b, _, h, w = kept.shape
        if z is None:
            z = self.prior.sample(kept.new_empty(b, self.n_out, h, w), context, temperature)
        elif tuple(z.shape) != (b, self.n_out, h, w):
            raise PAReconError(f"split latent of shape {tuple(z.shape)} does not fit {(b, self.n_out, h, w)}",
                               field="latents")
        return torch.cat([kept, z], dim=1), self.prior.log_prob(z, context)

    def out_shapes(self, shape: Shape) -> tuple[Shape, Shape]:
        """Per-sample (kept, latent) shapes for an input shape (C, H, W)."""
        _, h, w = shape
        return (self.n_kept, h, w), (self.n_out, h, w)
