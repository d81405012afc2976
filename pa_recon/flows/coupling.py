"""Affine coupling (RealNVP) with checkerboard or channel masks, optionally conditioned on feature maps.

z = x * exp(log_s) + t on the transformed part, where (log_s, t) come from a sub-network that sees only the
untouched part (plus, for a conditional coupling, the condition features concatenated on the channel axis).

Checkerboard masks come in two forms with the same pixel split. "checkerboard": the sub-network runs on the full
(H, W) image with the transformed pixels zeroed (RealNVP, the UvA tutorial). "checkerboard_packed": the untouched
pixels of each row are packed into an (H, W / 2) image and the sub-network runs on that, predicting (log_s, t) for
the packed transformed pixels: half the work, other neighbourhoods (as normflows' checkerboard coupling).
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
Mask = Literal["checkerboard", "checkerboard_packed", "channel"]
MASKS = ("checkerboard", "checkerboard_packed", "channel")


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


def _odd_rows_first(height: int, parity: int, like: Tensor) -> Tensor:
    """(H, 1) bool: rows whose pixel with (row + col) % 2 == parity is the second of each column pair."""
    return ((torch.arange(height, device=like.device) + parity) % 2 == 1)[:, None]


def pack_checkerboard(x: Tensor, parity: int) -> tuple[Tensor, Tensor]:
    """(B, C, H, W) with W even -> (kept, moved), each (B, C, H, W / 2): per row, the pixels with
    (row + col) % 2 == parity, and the others, in column order."""
    if x.shape[-1] % 2:
        raise PAReconError(f"a packed checkerboard needs an even width, got {x.shape[-1]}", field="x")
    first, second = x.unflatten(-1, (x.shape[-1] // 2, 2)).unbind(-1)
    swap = _odd_rows_first(x.shape[-2], parity, x)
    return torch.where(swap, second, first), torch.where(swap, first, second)


def unpack_checkerboard(kept: Tensor, moved: Tensor, parity: int) -> Tensor:
    """Inverse of :func:`pack_checkerboard`: (kept, moved), each (B, C, H, W / 2) -> (B, C, H, W)."""
    swap = _odd_rows_first(kept.shape[-2], parity, kept)
    return torch.stack([torch.where(swap, moved, kept), torch.where(swap, kept, moved)], dim=-1).flatten(-2)


class AffineCoupling(InvertibleModule):
    """Affine coupling on (B, channels, H, W); conditional when ``cond_channels`` > 0.

    mask "checkerboard": pixels with (row + col) % 2 == parity stay, the others are transformed;
    mask "checkerboard_packed": the same pixels, the sub-network on the packed half-width image (needs even W);
    mask "channel": the first C // 2 channels (parity 0) or the last C - C // 2 (parity 1) stay.
    """

    def __init__(
        self,
        channels: int,
        mask: Mask = "channel",
        parity: int = 0,
        subnet: SubnetConfig = SubnetConfig(),
        cond_channels: int = 0,
        scale: ScaleKind = "tanh",
        scale_bound: float = 2.0,
    ) -> None:
        super().__init__()
        if mask == "channel" and channels < 2:
            raise PAReconError(f"a channel-mask coupling needs at least 2 channels, got {channels}", field="channels")
        for field, value, allowed in (("mask", mask, MASKS), ("parity", parity, (0, 1)),
                                      ("scale", scale, ("tanh", "sigmoid"))):
            if value not in allowed:
                raise PAReconError(f"must be one of {', '.join(map(repr, allowed))}, got {value!r}", field=field)
        self.channels, self.mask, self.parity = channels, mask, parity
        self.cond_channels, self.scale, self.scale_bound = cond_channels, scale, scale_bound
        self.cut = channels // 2
        kept = self.cut if parity == 0 else channels - self.cut
        n_in, n_out = (kept, channels - kept) if mask == "channel" else (channels, channels)
        self.net = make_subnet(subnet, n_in + cond_channels, 2 * n_out)

    def _params(self, x_kept: Tensor, cond: Tensor | None, x: Tensor) -> tuple[Tensor, Tensor]:
        h = x_kept
        if self.cond_channels:
            h = torch.cat([h, check_cond(cond, x, self.cond_channels).to(h.dtype)], dim=1)
        raw, t = self.net(h).to(x.dtype).chunk(2, dim=1)
        return bounded_log_scale(raw, self.scale, self.scale_bound), t

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(kept, moved) parts of x for the channel and packed checkerboard masks."""
        if self.mask == "checkerboard_packed":
            return pack_checkerboard(x, self.parity)
        a, b = x[:, : self.cut], x[:, self.cut :]
        return (a, b) if self.parity == 0 else (b, a)

    def _merge(self, kept: Tensor, moved: Tensor) -> Tensor:
        if self.mask == "checkerboard_packed":
            return unpack_checkerboard(kept, moved, self.parity)
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
        if self.mask == "checkerboard_packed" and self.cond_channels:
            cond = pack_checkerboard(check_cond(cond, x, self.cond_channels), self.parity)[0]
        log_s, t = self._params(kept, cond, kept)
        with exact_arithmetic(x):
            moved = moved * torch.exp(log_s) + t if sign > 0 else (moved - t) * torch.exp(-log_s)
        return self._merge(kept, moved), sign * sum_per_sample(log_s)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, cond, +1)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, cond, -1)
