"""The invertible-module contract, composition, inversion, and the shape checks every module shares.

Contract: ``forward(x, cond=None) -> (z, logdet)`` and ``inverse(z, cond=None) -> (x, logdet)`` on image
batches ``(B, C, H, W)``; ``logdet`` has shape ``(B,)`` and is log|det| of the map applied in that direction,
so ``inverse(*forward(x))`` returns ``x`` and the negated log-determinant.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import cast

import torch
from torch import Tensor, nn

from pa_recon.errors import PAReconError

Shape = tuple[int, int, int]
"""A per-sample image shape ``(C, H, W)``."""

LOG_2PI = math.log(2 * math.pi)


class InvertibleModule(nn.Module, ABC):
    """A bijection on image batches that reports its per-sample log|det Jacobian| in both directions.

    ``scale_change`` is how many 2x spatial down-samplings the module applies (squeeze/Haar: 1); ``cond_channels``
    is the channel count of the condition feature map it needs (0: none, and ``cond`` is ignored).
    """

    scale_change: int = 0
    cond_channels: int = 0

    @abstractmethod
    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map ``x`` (B, C, H, W) to ``(z, logdet)``; logdet has shape (B,)."""

    @abstractmethod
    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map ``z`` back to ``(x, logdet)``; logdet is log|det| of the inverse map, shape (B,)."""

    def out_shape(self, shape: Shape) -> Shape:
        """Per-sample output shape for a per-sample input shape ``(C, H, W)``."""
        return shape


class SequentialFlow(InvertibleModule):
    """Composition of invertible modules; every conditional member receives the same ``cond`` tensor."""

    def __init__(self, modules: Iterable[InvertibleModule]) -> None:
        super().__init__()
        layers = list(modules)
        self.layers = nn.ModuleList(layers)
        self.scale_change = sum(m.scale_change for m in layers)
        self.cond_channels = max((m.cond_channels for m in layers), default=0)

    def _members(self) -> list[InvertibleModule]:
        return cast("list[InvertibleModule]", list(self.layers))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self._members():
            x, ld = layer(x, cond)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = z.new_zeros(z.shape[0])
        for layer in reversed(self._members()):
            z, ld = layer.inverse(z, cond)
            logdet = logdet + ld
        return z, logdet

    def out_shape(self, shape: Shape) -> Shape:
        for layer in self._members():
            shape = layer.out_shape(shape)
        return shape


class Inverse(InvertibleModule):
    """The inverse of a shape-preserving invertible module (e.g. sigmoid as the inverse of logit)."""

    module: InvertibleModule

    def __init__(self, module: InvertibleModule) -> None:
        super().__init__()
        if module.scale_change:
            raise ValueError("Inverse supports shape-preserving modules only")
        self.module = module
        self.cond_channels = module.cond_channels

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.module.inverse(x, cond)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.module(z, cond)


def sum_per_sample(t: Tensor) -> Tensor:
    """Sum over every axis but the first: (B, ...) -> (B,)."""
    return t.flatten(1).sum(1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """Per-sample log density of a standard normal: (B, ...) -> (B,)."""
    return -0.5 * sum_per_sample(z * z) - 0.5 * LOG_2PI * z[0].numel()


def exact_arithmetic(x: Tensor) -> AbstractContextManager[None]:
    """Context that switches autocast off on ``x``'s device, so invertible arithmetic keeps ``x``'s dtype."""
    return torch.autocast(x.device.type, enabled=False)


def check_image(x: Tensor, channels: int | None, name: str = "x") -> None:
    """Raise PAReconError unless ``x`` is (B, channels, H, W) (any channel count when ``channels`` is None)."""
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        want = f"(B, {channels}, H, W)" if channels is not None else "(B, C, H, W)"
        raise PAReconError(f"expected shape {want}, got {tuple(x.shape)}", field=name)


def check_even(x: Tensor, name: str = "x") -> None:
    """Raise PAReconError unless the spatial size of the image batch ``x`` is even in both directions."""
    check_image(x, None, name)
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise PAReconError(f"2x down-sampling needs even height and width, got {tuple(x.shape[2:])}", field=name)


def check_cond(cond: Tensor | None, x: Tensor, channels: int) -> Tensor:
    """Return ``cond`` after checking it is (B, channels, H, W) with the batch and spatial size of ``x``."""
    if cond is None:
        raise PAReconError(f"this module needs a condition feature map with {channels} channels", field="cond")
    check_image(cond, channels, "cond")
    if cond.shape[0] != x.shape[0] or cond.shape[2:] != x.shape[2:]:
        raise PAReconError(
            f"condition shape {tuple(cond.shape)} does not match input batch/spatial size {tuple(x.shape)}",
            field="cond",
        )
    return cond
