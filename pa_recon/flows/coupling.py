"""Affine coupling (RealNVP) with checkerboard or channel masks, optionally conditioned on feature maps.

z = x * exp(log_s) + t on the transformed part, where (log_s, t) come from a sub-network that sees only the
untouched part (plus, for a conditional coupling, the condition features concatenated on the channel axis).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from pa_recon.errors import PAReconError
from pa_recon.flows.base import InvertibleModule, check_cond, check_image, exact_arithmetic, sum_per_sample
from pa_recon.flows.subnets import SubnetConfig, make_subnet

ScaleKind = Literal["tanh", "sigmoid"]


def bounded_log_scale(raw: Tensor, kind: ScaleKind, bound: float) -> Tensor:
    """Log-scale from raw network output, bounded for stability (so the inverse never divides by ~0).

    "tanh": ``bound * tanh(raw / bound)``, in (-bound, bound); raw = 0 is the identity.
    "sigmoid": Glow's scale sigmoid(raw + 2) lifted to exp(-bound) + (1 - exp(-bound)) * sigmoid(raw + 2),
    so the log-scale lies in (-bound, 0).
    """
    if kind == "tanh":
        return bound * torch.tanh(raw / bound)
    return torch.logaddexp(
        torch.full_like(raw, -bound), math.log(-math.expm1(-bound)) + torch.nn.functional.logsigmoid(raw + 2.0)
    )


def checkerboard(height: int, width: int, parity: int, like: Tensor) -> Tensor:
    """(1, 1, H, W) mask, 1 where (row + col) % 2 == parity (the pixels a coupling leaves untouched)."""
    rows = torch.arange(height, device=like.device)[:, None]
    cols = torch.arange(width, device=like.device)[None, :]
    return ((rows + cols) % 2 == parity).to(like.dtype)[None, None]


class AffineCoupling(InvertibleModule):
    """Affine coupling on (B, channels, H, W); conditional when ``cond_channels`` > 0.

    mask "checkerboard": pixels with (row + col) % 2 == parity stay, the others are transformed;
    mask "channel": the first C // 2 channels (parity 0) or the last C - C // 2 (parity 1) stay.
    """

    def __init__(
        self,
        channels: int,
        mask: Literal["checkerboard", "channel"] = "channel",
        parity: int = 0,
        subnet: SubnetConfig = SubnetConfig(),
        cond_channels: int = 0,
        scale: ScaleKind = "tanh",
        scale_bound: float = 2.0,
    ) -> None:
        super().__init__()
        if mask == "channel" and channels < 2:
            raise PAReconError(f"a channel-mask coupling needs at least 2 channels, got {channels}", field="channels")
        if mask not in ("checkerboard", "channel") or parity not in (0, 1) or scale not in ("tanh", "sigmoid"):
            raise PAReconError(f"bad coupling settings: mask={mask!r}, parity={parity!r}, scale={scale!r}")
        self.channels, self.mask, self.parity = channels, mask, parity
        self.cond_channels, self.scale, self.scale_bound = cond_channels, scale, scale_bound
        self.cut = channels // 2
        kept = self.cut if parity == 0 else channels - self.cut
        n_in, n_out = (channels, channels) if mask == "checkerboard" else (kept, channels - kept)
        self.net = make_subnet(subnet, n_in + cond_channels, 2 * n_out)

    def _params(self, x_kept: Tensor, cond: Tensor | None, x: Tensor) -> tuple[Tensor, Tensor]:
        h = x_kept
        if self.cond_channels:
            h = torch.cat([h, check_cond(cond, x, self.cond_channels).to(h.dtype)], dim=1)
        raw, t = self.net(h).to(x.dtype).chunk(2, dim=1)
        return bounded_log_scale(raw, self.scale, self.scale_bound), t

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x[:, : self.cut], x[:, self.cut :]
        return (a, b) if self.parity == 0 else (b, a)

    def _merge(self, kept: Tensor, moved: Tensor) -> Tensor:
        return torch.cat([kept, moved] if self.parity == 0 else [moved, kept], dim=1)

    def _couple(self, x: Tensor, cond: Tensor | None, sign: int) -> tuple[Tensor, Tensor]:
        check_image(x, self.channels)
        if self.mask == "checkerboard":
            m = checkerboard(x.shape[2], x.shape[3], self.parity, x)
            log_s, t = self._params(x * m, cond, x)
            log_s, t = log_s * (1 - m), t * (1 - m)
            with exact_arithmetic(x):
                y = x * torch.exp(log_s) + t if sign > 0 else (x - t) * torch.exp(-log_s)
            return y, sign * sum_per_sample(log_s)
        kept, moved = self._split(x)
        log_s, t = self._params(kept, cond, x)
        with exact_arithmetic(x):
            moved = moved * torch.exp(log_s) + t if sign > 0 else (moved - t) * torch.exp(-log_s)
        return self._merge(kept, moved), sign * sum_per_sample(log_s)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, cond, +1)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, cond, -1)
