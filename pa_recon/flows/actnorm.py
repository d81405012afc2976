"""ActNorm (Glow): per-channel affine map with data-dependent initialisation from the first batch."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pa_recon.flows.base import InvertibleModule, check_image, exact_arithmetic


class ActNorm(InvertibleModule):
    """z = (x + bias) * exp(log_scale) per channel on (B, channels, H, W).

    The first forward call on an uninitialised module sets bias and log_scale so that this batch comes out with
    zero mean and unit standard deviation per channel. The ``initialized`` flag is a buffer, so a module loaded from
    a state dict keeps its loaded parameters.
    """

    initialized: Tensor

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self._ready = False  # Python mirror of the buffer, so forward never syncs on it

    def mark_initialized(self) -> None:
        """Keep the current parameters: no data-dependent initialisation on the next forward call."""
        self.initialized.fill_(True)
        self._ready = True

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ready = bool(self.initialized)

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.mark_initialized()

    def _logdet(self, x: Tensor) -> Tensor:
        return (self.log_scale.sum() * (x.shape[2] * x.shape[3])).to(x.dtype).expand(x.shape[0])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_image(x, self.channels)
        if not self._ready:
            self._initialize(x)
        with exact_arithmetic(x):
            z = (x + self.bias) * torch.exp(self.log_scale)
        return z, self._logdet(x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_image(z, self.channels)
        with exact_arithmetic(z):
            x = z * torch.exp(-self.log_scale) - self.bias
        return x, -self._logdet(z)
