"""Latent-space MAP ("deep prior"): reconstruct as ``x = G(z [; c])`` with the prior's generator fixed.

Minimises ``½‖A G(z) − y‖² / σ² + ½‖z‖²`` (nats) over the whitened latents ``z``, from ``z = 0`` (the prior's
central image), by the batched descent of :func:`pa_recon.recon.descent.minimise` (Adam or L-BFGS), with the same
per-scan stopping rules. Since ``−log p(x) = ½‖G⁻¹(x)‖² + log |det ∂G/∂z| + const``, this is the MAP over
``z``, not over ``x``: it leaves out the volume term, and the two coincide only when that term is constant (a
linear ``G``).
"""

from __future__ import annotations

import torch

from pa_recon.recon.adam import AdamSettings
from pa_recon.recon.base import LinearOperator, batch_dot, require
from pa_recon.recon.descent import minimise
from pa_recon.recon.lbfgs import LBFGSSettings
from pa_recon.recon.map_common import MAPResult, check_inputs, zero_latents
from pa_recon.recon.prior_protocol import Condition, ImagePrior, prior_condition

#: Default settings: as :class:`AdamSettings` but 5× the learning rate, since latents are in units of the
#: prior's standard deviation, not of the image.
LATENT_SETTINGS = AdamSettings(lr=5e-2)


def map_latent(
    op: LinearOperator,
    y: torch.Tensor,
    sigma: float | torch.Tensor,
    prior: ImagePrior,
    *,
    z0: list[torch.Tensor] | None = None,
    settings: AdamSettings | LBFGSSettings = LATENT_SETTINGS,
) -> MAPResult:
    """Latent-space MAP for data ``y`` ``(B, *op.data_shape)`` with noise std ``sigma`` (data units, a number or
    ``(B,)``); a conditional prior is conditioned on ``prior.condition(op, y)``.

    Starts from ``z0`` (one ``(B, C, H, W)`` tensor per ``prior.latent_shapes()``, copied), default zeros.
    ``settings`` default to :data:`LATENT_SETTINGS`. Returns :class:`~pa_recon.recon.map_common.MAPResult` with
    ``image = G(z)`` ``(B, *op.image_shape)`` and the final ``latents``.
    """
    y, sigma, prior = check_inputs(op, y, sigma, prior)
    z = zero_latents(prior, y)
    if z0 is not None:
        require(isinstance(z0, (list, tuple)) and len(z0) == len(z)
                and all(isinstance(a, torch.Tensor) and a.shape == b.shape for a, b in zip(z0, z)),
                f"expected {len(z)} latents of shapes {[tuple(b.shape) for b in z]}", "z0")
        require(all(bool(torch.isfinite(a).all()) for a in z0), "contains NaN or infinite values", "z0")
        z = [a.detach().to(dtype=y.dtype, device=y.device, copy=True) for a in z0]
    return latent_descent(op, y, sigma, prior, prior_condition(prior, op, y), z, settings)


def latent_descent(op: LinearOperator, y: torch.Tensor, sigma: torch.Tensor, prior: ImagePrior,
                   cond: Condition | None, z: list[torch.Tensor],
                   settings: AdamSettings | LBFGSSettings) -> MAPResult:
    """The descent of :func:`map_latent` on checked inputs: ``sigma`` ``(B,)``, the prior's condition ``cond``
    for ``y`` (``None`` for a marginal prior) and the start latents ``z`` (not modified)."""
    z, history, stopped, steps = minimise(
        op, y, sigma, z, lambda v: prior.generate(v, cond),
        lambda v, image: 0.5 * torch.stack([batch_dot(a, a) for a in v]).sum(0), settings)
    with torch.no_grad():
        image = prior.generate(z, cond)
    return MAPResult(image.detach(), history, stopped, steps, [a.detach() for a in z])
