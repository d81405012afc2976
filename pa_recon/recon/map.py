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
#: What a scan of :func:`map_image` started from (``MAPResult.starts``): a named start that ``"auto"`` resolves
#: to, or a given image.
START_KINDS: tuple[str, ...] = ("backprojection", "prior", "tv", "latent", "image")


def check_start(name: object, field: str = "x0") -> str:
    """``name`` if it is one of :data:`STARTS`, else a :class:`~pa_recon.errors.PAReconError` about ``field``."""
    require(isinstance(name, str) and name in STARTS,
            f"unknown start {name!r}; use one of {', '.join(STARTS)} (or, in Python, an image)", field)
    return name


def resolved_start(x0: str, prior: ImagePrior) -> str:
    """The start that :func:`map_image` takes for ``x0`` (one of :data:`STARTS`) with ``prior``: ``"auto"`` is
    ``"latent"`` for a conditional prior and ``"tv"`` for a marginal one."""
    name = check_start(x0)
    if name == "auto":
        return "latent" if prior.conditional else "tv"
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
    latent_nll_max: float | None = None,
    latent_start: torch.Tensor | None = None,
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
    an image ``(B, *op.image_shape)``, which is copied. ``latent_nll_max`` (nats per pixel; ``"auto"`` only): a
    scan whose latent start the prior scores above it starts from TV instead. A latent MAP the prior finds
    atypical marks data unlike its training images, where that image on the prior's range is a biased start.
    ``latent_start`` ``(B, *op.image_shape)``: the latent MAP images when they are already made (by
    :func:`~pa_recon.recon.latent.map_latent` with ``latent_settings`` on the same data, ``sigma`` and prior); the
    ``"latent"`` start then takes them instead of running that descent again.
    ``settings``: :class:`AdamSettings` or :class:`~pa_recon.recon.lbfgs.LBFGSSettings`; the learning rate is in
    image units per step. Returns :class:`~pa_recon.recon.map_common.MAPResult` (``latents`` is ``None``;
    ``starts`` one of :data:`START_KINDS` per scan; ``start_nll`` the NLL per pixel of a latent start).
    """
    y, sigma, prior = check_inputs(op, y, sigma, prior)
    lam = check_number(lam, "lam", minimum=0)
    if latent_nll_max is not None:
        latent_nll_max = check_number(latent_nll_max, "latent_nll_max")
        require(isinstance(x0, str) and x0 == "auto", "applies to the start 'auto' only", "latent_nll_max")
    if latent_start is not None:
        require(isinstance(x0, str) and resolved_start(x0, prior) == "latent",
                "applies to a latent start only (x0 'latent', or 'auto' with a conditional prior)", "latent_start")
        require(isinstance(latent_start, torch.Tensor) and latent_start.shape == (y.shape[0], *op.image_shape),
                f"expected images of shape {(y.shape[0], *op.image_shape)}", "latent_start")
        require(bool(torch.isfinite(latent_start).all()), "contains NaN or infinite values", "latent_start")
    cond = prior_condition(prior, op, y)
    start_nll = None
    if isinstance(x0, str):
        name = resolved_start(x0, prior)
        starts = [name] * y.shape[0]
        if name == "latent":
            start = (latent_descent(op, y, sigma, prior, cond, zero_latents(prior, y), latent_settings).image
                     if latent_start is None else latent_start.to(dtype=y.dtype, device=y.device))
            with torch.no_grad():
                start_nll = prior.nll(start, cond) / start[0].numel()
            if latent_nll_max is not None and bool((off := start_nll > latent_nll_max).any()):
                start = start.clone()
                start[off] = _tv_start(op, y[off], op_norm)
                starts = ["tv" if o else name for o in off.tolist()]
        else:
            with torch.no_grad():
                if name == "backprojection":
                    start = back_projection(op, y, nonneg=True)
                elif name == "tv":
                    start = _tv_start(op, y, op_norm)
                else:
                    start = prior.generate(zero_latents(prior, y), cond)
        x = initial_image(op, y, start)
    else:
        starts = ["image"] * y.shape[0]
        x = initial_image(op, y, x0)
    (x,), history, stopped, steps = minimise(
        op, y, sigma, [x], lambda v: v[0], lambda v, image: lam * prior.nll(image, cond), settings)
    return MAPResult(x.detach(), history, stopped, steps, None, tuple(starts), start_nll)


def _tv_start(op: LinearOperator, y: torch.Tensor, op_norm: float | None) -> torch.Tensor:
    """The TV image ``(B, *op.image_shape)`` of data ``y`` ``(B, *op.data_shape)`` with the ``tv`` method's
    defaults."""
    with torch.no_grad():
        norm = operator_norm(op, dtype=y.dtype, device=y.device) if op_norm is None else op_norm
        return tv_reconstruction(op, y, lam=TV_LAM_FRACTION * norm**2, n_iter=TV_ITERS, op_norm=norm).image
