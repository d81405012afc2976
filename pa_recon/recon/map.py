"""Image-space MAP reconstruction with a learned prior.

The objective, per scan with noise std ``σ`` (data units), is ``½‖A x − y‖² / σ² + λ · NLL(x [| c])`` in nats,
minimised by the batched descent of :mod:`pa_recon.recon.descent` (Adam or L-BFGS; stopping rules there);
:mod:`pa_recon.recon.latent` minimises the same data term over the prior's latents.
The data term may weight by noise plus model error (:func:`~pa_recon.recon.map_common.total_sigma`).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from pa_recon.recon.adam import AdamSettings
from pa_recon.recon.backprojection import back_projection
from pa_recon.checks import check_number
from pa_recon.recon.base import LinearOperator, initial_image, operator_norm, require
from pa_recon.recon.descent import minimise
from pa_recon.recon.latent import LATENT_SETTINGS, latent_descent
from pa_recon.recon.lbfgs import LBFGSSettings
from pa_recon.recon.map_common import MAPResult, check_inputs, zero_latents
from pa_recon.recon.prior_protocol import ImagePrior, prior_condition
from pa_recon.recon.tv import TV_ITERS, TV_LAM_FRACTION, tv_reconstruction

Start = Literal["auto", "backprojection", "prior", "tv", "latent"]
#: The named starts of :func:`map_image`.
STARTS: tuple[str, ...] = get_args(Start)


def check_start(name: object, field: str = "x0") -> str:
    """``name`` if it is one of :data:`STARTS`, else a :class:`~pa_recon.errors.PAReconError` about ``field``."""
    require(isinstance(name, str) and name in STARTS,
            f"unknown start {name!r}; use one of {', '.join(STARTS)} (or, in Python, an image)", field)
    return name


def map_image(
    op: LinearOperator,
    y: torch.Tensor,
    sigma: float | torch.Tensor,
    prior: ImagePrior,
    *,
    lam: float = 1.0,
    x0: torch.Tensor | Start = "auto",
    settings: AdamSettings | LBFGSSettings = AdamSettings(),
    op_norm: float | None = None,
    latent_settings: AdamSettings | LBFGSSettings = LATENT_SETTINGS,
) -> MAPResult:
    """Image-space MAP: minimise ``½‖A x − y‖²/σ² + lam · NLL(x [| c])`` for data ``y`` ``(B, *op.data_shape)``.

    ``sigma``: noise std in data units, a number or ``(B,)``. ``lam = 1`` is the Bayesian MAP when ``sigma`` and
    the prior are right; a conditional prior is conditioned on ``prior.condition(op, y)``. Start ``x0``:
    ``"backprojection"`` (scaled, clipped at 0); ``"prior"`` (``G(0; c)``, the image of the zero latent: the
    prior's central image, close to the conditional mean of a conditional prior); ``"tv"`` (the TV reconstruction
    with the ``tv`` method's defaults: weight ``TV_LAM_FRACTION · ‖A‖²``, ``TV_ITERS`` iterations, non-negative;
    ``op_norm`` is ‖A‖ if known, else it is estimated); ``"latent"`` (the latent-space MAP
    :func:`~pa_recon.recon.latent.map_latent` with ``latent_settings``, same data and ``sigma``: an image on the
    prior's range that fits the data, which the image-space steps then free from that range); ``"auto"``
    (``"latent"`` for a conditional prior, ``"tv"`` for a marginal one, whose latent MAP fits the data poorly); or
    an image ``(B, *op.image_shape)``, which is copied. ``settings``: :class:`AdamSettings` or
    :class:`~pa_recon.recon.lbfgs.LBFGSSettings`; the learning rate is in image units per step. Returns
    :class:`~pa_recon.recon.map_common.MAPResult` (``latents`` is ``None``).
    """
    y, sigma, prior = check_inputs(op, y, sigma, prior)
    lam = check_number(lam, "lam", minimum=0)
    cond = prior_condition(prior, op, y)
    if isinstance(x0, str):
        if check_start(x0) == "auto":
            x0 = "latent" if prior.conditional else "tv"
        if x0 == "latent":
            start = latent_descent(op, y, sigma, prior, cond, zero_latents(prior, y), latent_settings).image
        else:
            with torch.no_grad():
                if x0 == "backprojection":
                    start = back_projection(op, y, nonneg=True)
                elif x0 == "tv":
                    norm = operator_norm(op, dtype=y.dtype, device=y.device) if op_norm is None else op_norm
                    start = tv_reconstruction(op, y, lam=TV_LAM_FRACTION * norm**2, n_iter=TV_ITERS,
                                              op_norm=norm).image
                else:
                    start = prior.generate(zero_latents(prior, y), cond)
        x = initial_image(op, y, start)
    else:
        x = initial_image(op, y, x0)
    (x,), history, stopped, steps = minimise(
        op, y, sigma, [x], lambda v: v[0], lambda v, image: lam * prior.nll(image, cond), settings)
    return MAPResult(x.detach(), history, stopped, steps, None)
