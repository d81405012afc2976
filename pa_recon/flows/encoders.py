"""Condition encoders: a condition image (B, Cc, Hc, Wc) -> one feature map (B, out_channels, H / 2^s, W / 2^s)
for every flow scale s in ``scales``, where H = Hc * upscale (the flow's input size).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pa_recon.errors import PAReconError
from pa_recon.flows.base import check_image
from pa_recon.flows.subnets import ResBlock


class UNetEncoder(nn.Module):
    """A UNet on condition images of the flow's size (B, in_channels, H, W).

    ``depth`` down-samplings (default: the coarsest requested scale), ``width`` channels at full resolution, doubled
    at each level, ``blocks`` residual blocks per level and side. The decoder feature of scale s, through a 3x3
    convolution, is the output for scale s (the decoder stops at the finest requested scale). H and W must be
    divisible by 2^depth.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scales: Sequence[int],
        width: int = 32,
        depth: int | None = None,
        blocks: int = 1,
    ) -> None:
        super().__init__()
        self.scales = list(scales)
        self.in_channels = in_channels
        self.depth = max(self.scales) if depth is None else depth
        if not self.scales or min(self.scales) < 0 or max(self.scales) > self.depth:
            raise PAReconError(f"scales {self.scales} must lie in 0..depth={self.depth}", field="scales")
        widths = [width * 2**d for d in range(self.depth + 1)]
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[d - 1], widths[d], 3, stride=2, padding=1),
                          *(ResBlock(widths[d]) for _ in range(blocks)))
            for d in range(1, self.depth + 1)
        )
        self.enc0 = nn.Sequential(*(ResBlock(width) for _ in range(blocks)))
        self.finest = min(self.scales)  # the decoder stops here
        self.up = nn.ModuleDict(
            {str(d): nn.Conv2d(widths[d + 1], widths[d], 3, padding=1) for d in range(self.finest, self.depth)}
        )
        self.merge = nn.ModuleDict({
            str(d): nn.Sequential(nn.Conv2d(2 * widths[d], widths[d], 1), *(ResBlock(widths[d]) for _ in range(blocks)))
            for d in range(self.finest, self.depth)
        })
        self.heads = nn.ModuleDict({str(s): nn.Conv2d(widths[s], out_channels, 3, padding=1) for s in self.scales})

    def forward(self, cond: Tensor) -> list[Tensor]:
        """(B, in_channels, H, W) -> [feature map of scale s, (B, out_channels, H / 2^s, W / 2^s)] for s in scales."""
        check_image(cond, self.in_channels, "cond")
        k = 2**self.depth
        if cond.shape[2] % k or cond.shape[3] % k:
            raise PAReconError(f"condition height and width must be divisible by {k}, got {tuple(cond.shape[2:])}",
                               field="cond")
        skips = [self.enc0(self.stem(cond))]
        for down in self.down:
            skips.append(down(skips[-1]))
        decoded = {self.depth: skips[-1]}
        h = skips[-1]
        for d in reversed(range(self.finest, self.depth)):
            h = self.up[str(d)](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = self.merge[str(d)](torch.cat([h, skips[d]], dim=1))
            decoded[d] = h
        return [self.heads[str(s)](decoded[s]) for s in self.scales]


class DenseBlock(nn.Module):
    """Three densely connected 3x3 convolutions with a scaled residual: x + 0.2 * conv(cat(x, h1, h2))."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels + i * growth, growth, 3, padding=1) for i in range(2))
        self.out = nn.Conv2d(channels + 2 * growth, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(F.leaky_relu(conv(torch.cat(feats, dim=1)), 0.2))
        return x + 0.2 * self.out(torch.cat(feats, dim=1))


class RRDB(nn.Module):
    """Residual-in-residual dense block (ESRGAN): x + 0.2 * DenseBlock(DenseBlock(DenseBlock(x)))."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*(DenseBlock(channels, growth) for _ in range(3)))

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.body(x)


class RRDBEncoder(nn.Module):
    """An RRDB trunk (SRFlow-style) at the condition's resolution, resampled to every requested flow scale.

    The condition may be smaller than the flow input by ``upscale`` (e.g. 4 for 4x super-resolution): the output of
    scale s has size (Hc * upscale / 2^s, Wc * upscale / 2^s), reached by bilinear up- or area down-sampling of the
    trunk features, then a 3x3 convolution per scale.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scales: Sequence[int],
        width: int = 32,
        blocks: int = 2,
        growth: int = 16,
        upscale: int = 1,
    ) -> None:
        super().__init__()
        self.scales, self.in_channels, self.upscale = list(scales), in_channels, upscale
        if not self.scales or min(self.scales) < 0 or upscale < 1:
            raise PAReconError(f"bad encoder settings: scales={self.scales}, upscale={upscale}", field="scales")
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.trunk = nn.Sequential(*(RRDB(width, growth) for _ in range(blocks)), nn.Conv2d(width, width, 3, padding=1))
        self.heads = nn.ModuleDict({str(s): nn.Conv2d(width, out_channels, 3, padding=1) for s in self.scales})

    def forward(self, cond: Tensor) -> list[Tensor]:
        """(B, in_channels, Hc, Wc) -> [(B, out_channels, Hc * upscale / 2^s, Wc * upscale / 2^s) for s in scales]."""
        check_image(cond, self.in_channels, "cond")
        k = 2 ** max(self.scales)
        height, width = cond.shape[2] * self.upscale, cond.shape[3] * self.upscale
        if height % k or width % k:
            raise PAReconError(f"condition size x {self.upscale} must be divisible by {k}, got {tuple(cond.shape[2:])}",
                               field="cond")
        h = self.stem(cond)
        h = h + self.trunk(h)
        return [self.heads[str(s)](self._resize(h, height >> s, width >> s)) for s in self.scales]

    @staticmethod
    def _resize(h: Tensor, height: int, width: int) -> Tensor:
        if (height, width) == tuple(h.shape[2:]):
            return h
        if height < h.shape[2]:
            return F.adaptive_avg_pool2d(h, (height, width))
        return F.interpolate(h, size=(height, width), mode="bilinear", align_corners=False)


class LabelEncoder(nn.Module):
    """Class labels as condition features: a one-hot condition (B, classes, 1, 1) -> a learned embedding of each class
    per flow scale s, (B, out_channels, H / 2^s, W / 2^s), constant over the image (H, W = ``size``, the flow's
    input size). Make the condition with :func:`one_hot_condition`."""

    def __init__(self, classes: int, out_channels: int, scales: Sequence[int], size: tuple[int, int]) -> None:
        super().__init__()
        self.scales, self.in_channels, self.size = list(scales), classes, size
        k = 2 ** max(self.scales, default=0)
        if not self.scales or min(self.scales) < 0 or classes < 2 or size[0] % k or size[1] % k:
            raise PAReconError(f"bad label encoder settings: classes={classes}, scales={self.scales}, size={size}",
                               field="scales")
        self.embed = nn.ModuleDict({str(s): nn.Conv2d(classes, out_channels, 1) for s in self.scales})

    def forward(self, cond: Tensor) -> list[Tensor]:
        """(B, classes, 1, 1) -> [(B, out_channels, H / 2^s, W / 2^s) for s in scales]."""
        check_image(cond, self.in_channels, "cond")
        if cond.shape[2:] != (1, 1):
            raise PAReconError(f"a label condition is (B, {self.in_channels}, 1, 1), got {tuple(cond.shape)}",
                               field="cond")
        h, w = self.size
        return [self.embed[str(s)](cond).expand(-1, -1, h >> s, w >> s) for s in self.scales]


def one_hot_condition(labels: Tensor, classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Integer labels (B,) in 0 … classes − 1 -> the one-hot condition (B, classes, 1, 1) of a :class:`LabelEncoder`."""
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.numel() and not (
            0 <= int(labels.min()) and int(labels.max()) < classes):
        raise PAReconError(f"expected integer labels (B,) in 0 … {classes - 1}, got {labels.dtype} "
                           f"{tuple(labels.shape)}", field="labels")
    return F.one_hot(labels.long(), classes).to(dtype)[:, :, None, None]
