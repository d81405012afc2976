"""Invertible 1x1 convolution (Glow), LU-parametrised: W = P L (U + diag(sign * exp(log_s)))."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pa_recon.flows.base import InvertibleModule, check_image, exact_arithmetic


class InvConv1x1(InvertibleModule):
    """Channel mixing z = W x at every pixel of (B, channels, H, W); log|det| = H * W * sum(log_s).

    P is a fixed permutation, L unit lower-triangular, U strictly upper-triangular plus a diagonal with fixed signs;
    W starts as a random rotation.
    """

    perm: Tensor
    sign: Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        q = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))[0]
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("perm", p.float())
        self.register_buffer("sign", torch.sign(diag).float())
        self.lower = nn.Parameter(torch.tril(lower, -1).float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(diag.abs()).float())

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign * torch.exp(self.log_s))
        return lower, upper

    def weight(self) -> Tensor:
        """The dense (channels, channels) matrix W."""
        lower, upper = self._factors()
        return self.perm @ lower @ upper

    def inverse_weight(self) -> Tensor:
        """W^-1 = U^-1 L^-1 P^T, from two triangular solves."""
        lower, upper = self._factors()
        eye = torch.eye(self.channels, dtype=lower.dtype, device=lower.device)
        lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, lower_inv, upper=True) @ self.perm.T

    def _logdet(self, x: Tensor) -> Tensor:
        return (self.log_s.sum() * (x.shape[2] * x.shape[3])).to(x.dtype).expand(x.shape[0])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_image(x, self.channels)
        with exact_arithmetic(x):
            z = nn.functional.conv2d(x, self.weight().to(x.dtype)[:, :, None, None])
        return z, self._logdet(x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_image(z, self.channels)
        with exact_arithmetic(z):
            x = nn.functional.conv2d(z, self.inverse_weight().to(z.dtype)[:, :, None, None])
        return x, -self._logdet(z)
