"""What the recon layer needs from a learned image prior, as a structural type (no import of ``pa_recon.priors``).

Contract. Images are ``(B, 1, nz, nx)`` in the units the prior was trained on. The latents are *whitened*:
``generate(z, c)`` with every ``z`` drawn from ``N(0, I)`` is a draw from ``p(x | c)`` (any learned latent mean
or scale is applied inside ``generate``), and ``encode`` is its inverse. That is what makes ``½‖z‖²`` the prior
term of the latent-space MAP and ``z ~ N(0, τ² I)`` the tempered sampler. ``nll`` is ``−log p(x | c)`` in nats
per image; ``nll`` and ``generate`` are differentiable in their first argument. Images of one batch are scored
independently (the prior is in evaluation mode), so summing per-image objectives never couples scans.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from pa_recon.errors import PAReconError
from pa_recon.recon.base import LinearOperator


@runtime_checkable
class ImagePrior(Protocol):
    """A marginal ``p(x)`` or conditional ``p(x | c)`` image prior with an invertible latent parametrisation."""

    conditional: bool

    def condition(self, op: LinearOperator, y: torch.Tensor) -> torch.Tensor | None:
        """The condition ``c`` of data ``y`` ``(B, *op.data_shape)`` (a cheap image made from ``y``); ``None`` for
        a marginal prior."""
        ...

    def nll(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``−log p(x | cond)`` of images ``(B, 1, nz, nx)`` in nats, shape ``(B,)``, differentiable in ``x``."""
        ...

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """Shape ``(C, H, W)`` of each latent of one image, without the batch axis."""
        ...

    def generate(self, latents: list[torch.Tensor], cond: torch.Tensor | None = None) -> torch.Tensor:
        """``x = G(z; cond)``: whitened latents (one ``(B, C, H, W)`` per shape) → images ``(B, 1, nz, nx)``."""
        ...

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``z = G⁻¹(x; cond)``: images ``(B, 1, nz, nx)`` → whitened latents."""
        ...

    def sample(self, n: int, cond: torch.Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images ``(n, 1, nz, nx)`` from ``p(x | cond)`` with latents ``~ N(0, temperature² I)``."""
        ...


def check_prior(prior: object, *, conditional: bool | None = None) -> ImagePrior:
    """``prior`` as an :class:`ImagePrior`; with ``conditional`` given, it must be (or not be) conditional."""
    if not isinstance(prior, ImagePrior):
        raise PAReconError(f"{type(prior).__name__} does not implement the ImagePrior protocol", field="prior")
    if conditional is not None and bool(prior.conditional) != conditional:
        kind = "a conditional" if conditional else "a marginal"
        raise PAReconError(f"this method needs {kind} prior", field="prior")
    return prior


@torch.no_grad()
def prior_condition(prior: ImagePrior, op: LinearOperator, y: torch.Tensor) -> torch.Tensor | None:
    """The prior's condition for ``y`` (``None`` for a marginal prior), detached: it is data, not a variable."""
    if not prior.conditional:
        return None
    cond = prior.condition(op, y)
    return None if cond is None else cond.detach()
