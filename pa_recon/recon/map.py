"""Image-space MAP reconstruction with a learned prior.

The objective, per scan with noise std ``σ`` (data units), is ``½‖A x − y‖² / σ² + λ · NLL(x [| c])`` in nats,
minimised by the batched Adam loop of :mod:`pa_recon.recon.adam` (stopping rules there);
:mod:`pa_recon.recon.latent` minimises the same data term over the prior's latents.

The operator is never exact: data simulated on a finer grid, or measured, hold a part no image on the
reconstruction grid explains. Weighting the data by the noise std alone then makes a MAP fit that model error.
:func:`total_sigma` adds it as white noise of a given relative level (the approximation-error approach of
Kaipio and Somersalo, with the error's covariance reduced to a multiple of the identity).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from pa_recon.recon.adam import AdamSettings, check_sigma, minimise
from pa_recon.recon.backprojection import back_projection
from pa_recon.recon.base import (LinearOperator, batch_dot, check_data, check_number, initial_image, operator_norm,
                                 require)
from pa_recon.recon.prior_protocol import ImagePrior, check_prior, prior_condition
from pa_recon.recon.tv import TV_ITERS, TV_LAM_FRACTION, tv_reconstruction


class MAPResult(NamedTuple):
    """A MAP estimate per scan.

    ``image`` ``(B, *image_shape)``; ``history`` ``(n_done + 1, B)``, the objective (nats) at the start and after
    each step (constant once a scan has stopped; non-finite at the step where a scan diverged); ``stopped`` the
    reason each scan stopped (one of :data:`~pa_recon.recon.adam.STOP_REASONS`); ``steps`` ``(B,)`` the Adam steps
    each scan took; ``latents`` the final latents of a latent-space MAP, else ``None``.
    """

    image: torch.Tensor
    history: torch.Tensor
    stopped: tuple[str, ...]
    steps: torch.Tensor
    latents: list[torch.Tensor] | None


def chi_square(op: LinearOperator, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Reduced data misfit ``‖A x − y‖² / (σ² M)`` per scan ``(B,)``; about 1 for an image consistent with the
    data at noise std ``σ`` ``(B,)``, ``M`` data values per scan."""
    r = op(x) - y
    return batch_dot(r, r) / (sigma**2 * r[0].numel())


def total_sigma(y: torch.Tensor, sigma: torch.Tensor, model_error: float) -> torch.Tensor:
    """Per-scan std ``(B,)`` of the misfit a likelihood allows: ``√(σ² + (η · rms(y))²)`` for noise std ``σ``
    ``(B,)`` (data units), model error ``η = model_error`` (relative to the RMS of each scan's data ``y``
    ``(B, ...)``, e.g. 0.03 for 3 %); ``η = 0`` returns ``σ``."""
    eta = check_number(model_error, "model_error")
    rms = y.pow(2).flatten(1).mean(1).sqrt()
    return torch.sqrt(sigma**2 + (eta * rms) ** 2)


def zero_latents(prior: ImagePrior, y: torch.Tensor) -> list[torch.Tensor]:
    """Zero latents of ``prior``, one ``(B, C, H, W)`` per latent shape, with ``y``'s batch, dtype and device."""
    return [y.new_zeros((y.shape[0], *shape)) for shape in prior.latent_shapes()]


def check_inputs(op: LinearOperator, y: object, sigma: float | torch.Tensor,
                 prior: object) -> tuple[torch.Tensor, torch.Tensor, ImagePrior]:
    """Validated data ``(B, *op.data_shape)``, per-scan noise std ``(B,)`` and prior of a MAP problem."""
    y = check_data(op, y)
    return y, check_sigma(sigma, y), check_prior(prior)


def map_image(
    op: LinearOperator,
    y: torch.Tensor,
    sigma: float | torch.Tensor,
    prior: ImagePrior,
    *,
    lam: float = 1.0,
    x0: torch.Tensor | Literal["auto", "backprojection", "prior", "tv"] = "auto",
    settings: AdamSettings = AdamSettings(),
    op_norm: float | None = None,
) -> MAPResult:
    """Image-space MAP: minimise ``½‖A x − y‖²/σ² + lam · NLL(x [| c])`` for data ``y`` ``(B, *op.data_shape)``.

    ``sigma``: noise std in data units, a number or ``(B,)``. ``lam = 1`` is the Bayesian MAP when ``sigma`` and
    the prior are right; a conditional prior is conditioned on ``prior.condition(op, y)``. Start ``x0``:
    ``"backprojection"`` (scaled, clipped at 0), ``"prior"`` (``G(0; c)``, the image of the zero latent: the
    prior's central image, close to the conditional mean of a conditional prior), ``"tv"`` (the TV reconstruction
    with the ``tv`` method's defaults: weight ``TV_LAM_FRACTION · ‖A‖²``, ``TV_ITERS`` iterations, non-negative;
    ``op_norm`` is ‖A‖ if known, else it is estimated), ``"auto"`` (``"prior"`` for a conditional prior, ``"tv"``
    for a marginal one, whose central image ignores the data) or an image ``(B, *op.image_shape)``, which is
    copied. ``settings``: see :class:`AdamSettings`; the learning rate is in image units per step. Returns
    :class:`MAPResult` (``latents`` is ``None``).
    """
    y, sigma, prior = check_inputs(op, y, sigma, prior)
    lam = check_number(lam, "lam")
    cond = prior_condition(prior, op, y)
    if isinstance(x0, str):
        require(x0 in ("auto", "backprojection", "prior", "tv"),
                f"unknown start {x0!r}; use auto, backprojection, prior, tv or an image", "x0")
        if x0 == "auto":
            x0 = "prior" if prior.conditional else "tv"
        with torch.no_grad():
            if x0 == "backprojection":
                start = back_projection(op, y, nonneg=True)
            elif x0 == "tv":
                norm = operator_norm(op, dtype=y.dtype, device=y.device) if op_norm is None else op_norm
                start = tv_reconstruction(op, y, lam=TV_LAM_FRACTION * norm**2, n_iter=TV_ITERS, op_norm=norm).image
            else:
                start = prior.generate(zero_latents(prior, y), cond)
        x = initial_image(op, y, start)
    else:
        x = initial_image(op, y, x0)
    (x,), history, stopped, steps = minimise(
        op, y, sigma, [x], lambda v: v[0], lambda v, image: lam * prior.nll(image, cond), settings)
    return MAPResult(x.detach(), history, stopped, steps, None)
