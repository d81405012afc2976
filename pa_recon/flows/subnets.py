"""Convolutional sub-networks that compute coupling/injector/prior parameters: a ResNet and a gated-conv net.

Both map (B, in_channels, H, W) -> (B, out_channels, H, W) at constant resolution. Their last convolution is
zero-initialised by default, so a fresh coupling is the identity map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from pa_recon.errors import PAReconError


@dataclass(frozen=True)
class SubnetConfig:
    """Which sub-network to build: ``kind`` ("resnet" or "gated"), ``hidden`` channels, ``blocks`` residual blocks."""

    kind: Literal["resnet", "gated"] = "resnet"
    hidden: int = 64
    blocks: int = 2


class ChannelNorm(nn.Module):
    """Layer norm over the channels of each pixel, with per-channel affine parameters.

    Per sample and per pixel, so it works at any spatial size (down to 1x1) and never mixes samples.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        # The fused layer_norm kernel on a channels-last view: a third of the ops and saved memory of doing it
        # by hand (measured in benchmarks/flows.py).
        y = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def concat_elu(x: Tensor) -> Tensor:
    """ELU of ``x`` and of ``-x``, stacked on the channel axis: C -> 2C channels."""
    return nn.functional.elu(torch.cat([x, -x], dim=1))


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ChannelNorm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            ChannelNorm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class GatedBlock(nn.Module):
    """Gated residual block (Flow++ style): norm(x + a * sigmoid(b)) with (a, b) from two concat-ELU convs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.gate = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.norm = ChannelNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.gate(concat_elu(self.conv(concat_elu(x)))).chunk(2, dim=1)
        return self.norm(x + a * torch.sigmoid(b))


class ResNet(nn.Module):
    """conv -> ``blocks`` x ResBlock -> norm, act, conv; (B, in, H, W) -> (B, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            *(ResBlock(hidden) for _ in range(blocks)),
            ChannelNorm(hidden), nn.SiLU(),
        )
        self.last = nn.Conv2d(hidden, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.last(self.net(x))


class GatedConvNet(nn.Module):
    """conv -> ``blocks`` x GatedBlock -> concat-ELU, conv; (B, in, H, W) -> (B, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1), *(GatedBlock(hidden) for _ in range(blocks))
        )
        self.last = nn.Conv2d(2 * hidden, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.last(concat_elu(self.net(x)))


def make_subnet(config: SubnetConfig, in_channels: int, out_channels: int, zero_init: bool = True) -> nn.Module:
    """Build the sub-network ``config`` describes; ``zero_init`` zeroes its last convolution."""
    if config.kind == "resnet":
        net: ResNet | GatedConvNet = ResNet(in_channels, out_channels, config.hidden, config.blocks)
    elif config.kind == "gated":
        net = GatedConvNet(in_channels, out_channels, config.hidden, config.blocks)
    else:
        raise PAReconError(f"unknown sub-network kind {config.kind!r} (use 'resnet' or 'gated')", field="subnet.kind")
    if zero_init:
        for p in net.last.parameters():
            nn.init.zeros_(p)
    return net
