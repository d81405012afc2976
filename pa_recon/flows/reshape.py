"""Volume-changing-free reshapes: squeeze (space-to-depth) and Haar wavelet down-sampling, both (B, C, H, W) ->
(B, 4C, H/2, W/2).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from pa_recon.errors import PAReconError
from pa_recon.flows.base import InvertibleModule, Shape, check_even, check_image


class Squeeze(InvertibleModule):
    """Space-to-depth by 2: channel c * 4 + 2 * i + j of the output holds pixel (2h + i, 2w + j) of channel c."""

    scale_change = 1

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_even(x)
        return F.pixel_unshuffle(x, 2), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_image(z, None, "z")
        if z.shape[1] % 4:
            raise PAReconError(f"un-squeezing needs a channel count divisible by 4, got {z.shape[1]}", field="z")
        return F.pixel_shuffle(z, 2), z.new_zeros(z.shape[0])

    def out_shape(self, shape: Shape) -> Shape:
        c, h, w = shape
        return 4 * c, h // 2, w // 2


class HaarDownsample(InvertibleModule):
    """One level of the 2-D Haar transform per channel; output channels are [low-pass, d1, d2, d3], each C wide.

    For the 2x2 block (x00, x01; x10, x11): low = (x00 + x01 + x10 + x11) / a and d1, d2, d3 = the row, column and
    diagonal differences (x00 + x01 - x10 - x11, x00 - x01 + x10 - x11, x00 - x01 - x10 + x11) / c.

    variant "orthonormal": a = c = 2 (an orthogonal map, log|det| = 0).
    variant "mrcnf" (Voleti et al., Multi-Resolution CNFs, 2021): a = 4, so the low-pass band is the 2x2 average
    (the coarse image itself), and c = 2^(2/3), which makes the map unimodular: |det| = 16 / (a c^3) = 1.
    The returned log|det| is computed from a and c, so it is exact for both variants.
    """

    scale_change = 1

    def __init__(self, variant: Literal["orthonormal", "mrcnf"] = "orthonormal") -> None:
        super().__init__()
        if variant == "orthonormal":
            a, c = 2.0, 2.0
        elif variant == "mrcnf":
            a, c = 4.0, 2.0 ** (2.0 / 3.0)
        else:
            raise PAReconError(f"unknown Haar variant {variant!r} (use 'orthonormal' or 'mrcnf')", field="variant")
        self.variant, self.a, self.c = variant, a, c
        self.log_det_block = math.log(16.0) - math.log(a) - 3.0 * math.log(c)

    def _logdet(self, x: Tensor, blocks: int) -> Tensor:
        return x.new_full((x.shape[0],), self.log_det_block * blocks)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_even(x)
        b, ch, h, w = x.shape
        x00, x01, x10, x11 = F.pixel_unshuffle(x, 2).view(b, ch, 4, h // 2, w // 2).unbind(2)
        s0, s1, d0, d1 = x00 + x01, x10 + x11, x00 - x01, x10 - x11
        bands = [(s0 + s1) / self.a, (s0 - s1) / self.c, (d0 + d1) / self.c, (d0 - d1) / self.c]
        return torch.cat(bands, dim=1), self._logdet(x, ch * (h // 2) * (w // 2))

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_image(z, None, "z")
        if z.shape[1] % 4:
            raise PAReconError(f"inverse Haar needs a channel count divisible by 4, got {z.shape[1]}", field="z")
        b, ch4, h, w = z.shape
        low, r, c, d = z.chunk(4, dim=1)
        p, r, c, d = low * (self.a / 4), r * (self.c / 4), c * (self.c / 4), d * (self.c / 4)
        pixels = [p + r + c + d, p + r - c - d, p - r + c - d, p - r - c + d]
        x = F.pixel_shuffle(torch.stack(pixels, dim=2).view(b, ch4, h, w), 2)
        return x, -self._logdet(z, ch4 // 4 * h * w)

    def out_shape(self, shape: Shape) -> Shape:
        c, h, w = shape
        return 4 * c, h // 2, w // 2
