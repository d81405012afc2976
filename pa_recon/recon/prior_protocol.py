"""What the recon layer needs from a learned image prior, as a structural type (no import of ``pa_recon.priors``).

Contract. Images are ``(B, 1, nz, nx)`` in the units the prior was trained on. The latents are *whitened*:
``generate(z, c)`` with every ``z`` drawn from ``N(0, I)`` is a draw from ``p(x | c)`` (any learned latent mean
or scale is applied inside ``generate``), and ``encode`` is its inverse. That is what makes ``½‖z‖²`` the prior
term of the latent-space MAP and ``z ~ N(0, τ² I)`` the tempered sampler. ``nll`` is ``−log p(x | c)`` in nats
per image; ``nll`` and ``generate`` are differentiable in their first argument. Images of one batch are scored
independently (the prior is in evaluation mode), so summing per-image objectives never couples scans.

The condition. ``condition`` makes ``c`` from the data; ``prepare_condition`` turns it into the form in which
``nll`` and ``generate`` use it fastest (a conditional flow: its encoder's feature maps), once per scan, for the
hundreds of calls of an iterative method. Both forms are a :data:`Condition` with the scans on the first axis of
every tensor, and ``nll``, ``generate`` and ``encode`` take either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeAlias, runtime_checkable

import torch

from pa_recon.errors import PAReconError
from pa_recon.recon.base import LinearOperator

#: A condition: an image ``(B, C, nz, nx)`` or a sequence of feature maps, each ``(B, ...)``.
Condition: TypeAlias = torch.Tensor | Sequence[torch.Tensor]


@runtime_checkable
class ImagePrior(Protocol):
    """A marginal ``p(x)`` or conditional ``p(x | c)`` image prior with an invertible latent parametrisation."""

    conditional: bool

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image, without the batch axis: ``(1, nz, nx)``."""
        ...

    def condition(self, op: LinearOperator, y: torch.Tensor) -> torch.Tensor | None:
        """The condition ``c`` of data ``y`` ``(B, *op.data_shape)`` (a cheap image made from ``y``); ``None`` for
        a marginal prior."""
        ...

    def prepare_condition(self, cond: torch.Tensor) -> Condition:
        """``cond`` (as :meth:`condition` returns it) in the form :meth:`nll` and :meth:`generate` use fastest."""
        ...

    def nll(self, x: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        """``−log p(x | cond)`` of images ``(B, 1, nz, nx)`` in nats, shape ``(B,)``, differentiable in ``x``."""
        ...

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """Shape ``(C, H, W)`` of each latent of one image, without the batch axis."""
        ...

    def generate(self, latents: list[torch.Tensor], cond: Condition | None = None) -> torch.Tensor:
        """``x = G(z; cond)``: whitened latents (one ``(B, C, H, W)`` per shape) → images ``(B, 1, nz, nx)``."""
        ...

    def encode(self, x: torch.Tensor, cond: Condition | None = None) -> list[torch.Tensor]:
        """``z = G⁻¹(x; cond)``: images ``(B, 1, nz, nx)`` → whitened latents."""
        ...

    def sample(self, n: int, cond: torch.Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images ``(n, 1, nz, nx)`` from ``p(x | cond)`` with latents ``~ N(0, temperature² I)``."""
        ...


def check_prior(prior: object, op: LinearOperator, *, conditional: bool | None = None) -> ImagePrior:
    """``prior`` as an :class:`ImagePrior` of ``op``'s images; with ``conditional`` given, it must be (or not be)
    conditional."""
    if not isinstance(prior, ImagePrior):
        raise PAReconError(f"{type(prior).__name__} does not implement the ImagePrior protocol", field="prior")
    if conditional is not None and bool(prior.conditional) != conditional:
        kind = "a conditional" if conditional else "a marginal"
        raise PAReconError(f"this method needs {kind} prior", field="prior")
    if tuple(prior.image_shape) != tuple(op.image_shape):
        raise PAReconError(f"the operator's images {tuple(op.image_shape)} are not this prior's "
                           f"{tuple(prior.image_shape)}: the prior was trained for another grid", field="op")
    return prior


@torch.no_grad()
def prior_condition(prior: ImagePrior, op: LinearOperator, y: torch.Tensor) -> Condition | None:
    """The prior's prepared condition for ``y`` (``None`` for a marginal prior), detached: it is data, not a
    variable."""
    if not prior.conditional:
        return None
    cond = prior.condition(op, y)
    if cond is None:
        return None
    prepared = prior.prepare_condition(cond)
    return prepared.detach() if isinstance(prepared, torch.Tensor) else [f.detach() for f in prepared]


def repeat_condition(cond: Condition | None, k: int) -> Condition | None:
    """``cond`` with each scan's entry repeated ``k`` times in a row (batch ``B`` → ``B·k``), as for ``k`` samples
    per scan."""
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return cond.repeat_interleave(k, dim=0)
    return [f.repeat_interleave(k, dim=0) for f in cond]
