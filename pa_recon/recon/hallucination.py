"""Hallucination flags: where an estimate shows structure that the data do not support.

Three per-pixel cues, each scaled to [0, 1], for an estimate ``x̂`` (a MAP image or the posterior mean):

* ``u = min(v / std_scale, 1)``: the posterior samples disagree in value. ``v = √(G_ρ * std²)`` is the samples'
  variance pooled over a Gaussian neighbourhood of ``std_pool = ρ`` pixels (``v = std`` for ``ρ = 0``): a std from
  a few samples is noisy pixel by pixel, and errors come in patches, not single pixels;
* ``p = |1[x̂ > t] − presence|``: the fraction of posterior samples that contradict the estimate about whether
  there is a vessel (value above the sampler's ``presence_threshold`` ``t``) in this pixel;
* ``n = min(|x̂_null| / null_scale, 1)``: the estimate's content that the operator does not see.
  ``x̂_null = x̂ − z`` with ``z = argmin ‖A z − A x̂‖² + lam ‖z‖²`` (CGLS from 0, exact adjoint): ``z`` keeps the
  singular components of ``x̂`` with ``s² ≫ lam`` and drops those with ``s² ≪ lam``, so ``x̂_null`` is the part
  of ``x̂`` in the (numerically) unconstrained subspace, which came from the prior, not from the data.

They combine by a weighted noisy-OR, ``score = 1 − (1 − w_u u)(1 − w_p p)(1 − w_n n)``: one strong cue is enough
and weak cues add up; a weight of 0 drops a cue. The mask is ``score ≥ threshold`` minus 8-connected regions of
fewer than ``min_size`` pixels (isolated specks; an opening would also erase one-pixel-wide vessels).

Samples whose data misfit is far from the noise level were already rejected by
:func:`~pa_recon.recon.posterior.posterior_sampling`. Whole scans (data out of the prior's distribution, a wrong
model or ``σ``: the pixel map should not be trusted there) are flagged by
:func:`~pa_recon.recon.posterior.scan_values`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from pa_recon.errors import PAReconError
from pa_recon.checks import check_count, check_number
from pa_recon.recon.base import LinearOperator, operator_norm, require
from pa_recon.recon.cgls import cgls
from pa_recon.recon.posterior import PosteriorResult


@dataclass(frozen=True)
class FlagRule:
    """Scales, weights and thresholds of the combination rule in the module notes.

    Defaults suit images in [0, 1] (the phantoms' range): a cue reaches 1 at 0.2, the size of error that the
    AUROC metric counts as large, so a single cue at half of that (std or unseen content of 0.1) or half of the
    samples contradicting the estimate reaches the 0.5 threshold. ``weights`` are for (std, presence, null space).
    ``std_pool`` is the Gaussian width (pixels) over which the variance is pooled; 0 keeps each pixel's own std.
    The null space is computed with ``lam = null_lam_fraction · ‖A‖²`` in ``null_iter`` CGLS iterations.
    """

    std_scale: float = 0.2
    std_pool: float = 0.0
    null_scale: float = 0.2
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    threshold: float = 0.5
    min_size: int = 4
    null_lam_fraction: float = 1e-3
    null_iter: int = 100

    def __post_init__(self) -> None:
        for name in ("std_scale", "null_scale"):
            object.__setattr__(self, name, check_number(getattr(self, name), name, above=0))
        object.__setattr__(self, "std_pool", check_number(self.std_pool, "std_pool", minimum=0))
        require(len(self.weights) == 3, f"expected three weights in [0, 1], got {self.weights!r}", "weights")
        weights = tuple(check_number(w, "weights", minimum=0, maximum=1) for w in self.weights)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "threshold", check_number(self.threshold, "threshold", minimum=0, maximum=1))
        object.__setattr__(self, "min_size", check_count(self.min_size, "min_size"))
        object.__setattr__(self, "null_lam_fraction", check_number(self.null_lam_fraction, "null_lam_fraction",
                                                                   minimum=0))
        object.__setattr__(self, "null_iter", check_count(self.null_iter, "null_iter", minimum=1))


class HallucinationResult(NamedTuple):
    """``score`` in [0, 1] and ``mask`` (bool), both ``(B, *image_shape)``; ``null_space`` the estimate's unseen
    part ``x̂_null`` (image units, signed)."""

    score: torch.Tensor
    mask: torch.Tensor
    null_space: torch.Tensor


def _check_images(op: LinearOperator, x: object, field: str) -> torch.Tensor:
    if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
        raise PAReconError("expected a floating-point tensor", field=field)
    require(tuple(x.shape[1:]) == tuple(op.image_shape),
            f"expected shape (batch, {', '.join(map(str, op.image_shape))}), got {tuple(x.shape)}", field)
    require(bool(torch.isfinite(x).all()), "contains NaN or infinite values", field)
    return x.detach()


def null_space_component(op: LinearOperator, x: torch.Tensor, *, lam: float, n_iter: int = 100) -> torch.Tensor:
    """``x − z`` with ``z = argmin ‖A z − A x‖² + lam ‖z‖²`` (CGLS from 0): the part of images ``x``
    ``(B, *op.image_shape)`` that the data cannot constrain; ``lam`` in (data / image units)²."""
    x = _check_images(op, x, "x")
    with torch.no_grad():
        return x - cgls(op, op(x), lam=lam, n_iter=n_iter, tol=1e-6).image


def remove_small_regions(mask: torch.Tensor, min_size: int) -> torch.Tensor:
    """``mask`` ``(..., nz, nx)`` (bool) without the 8-connected regions of fewer than ``min_size`` pixels in each
    image. Runs on the CPU (scipy) and returns a tensor on ``mask``'s device."""
    m = mask.detach().cpu().numpy().astype(bool)
    out = np.zeros_like(m)
    for index in np.ndindex(m.shape[:-2]):
        labels, _ = ndimage.label(m[index], structure=np.ones((3, 3), dtype=bool))
        keep = np.bincount(labels.ravel()) >= min_size
        keep[0] = False
        out[index] = keep[labels]
    return torch.from_numpy(out).to(mask.device)


def presence_contradiction(estimate: torch.Tensor, presence: torch.Tensor,
                           threshold: float) -> torch.Tensor:
    """The presence cue ``|1[x̂ > threshold] − presence|``: the fraction of samples that contradict ``estimate`` about
    whether a pixel shows a vessel; all ``(B, *image_shape)``."""
    return ((estimate > threshold).to(estimate.dtype) - presence).abs()


def pooled_std(std: torch.Tensor, width: float) -> torch.Tensor:
    """``√(G * std²)``: the per-pixel std ``(..., nz, nx)`` pooled as a variance over a normalised Gaussian ``G`` of
    ``width`` pixels (std dev), truncated at 4 widths and mirrored at the edges (the edge pixel not repeated), as
    ``scipy.ndimage.gaussian_filter(..., mode="mirror")`` while the kernel is narrower than the image; ``width = 0``
    returns ``std``. Separable, on ``std``'s device."""
    width = check_number(width, "std_pool", minimum=0)
    if width == 0:
        return std
    *lead, nz, nx = std.shape
    radius = min(int(4 * width + 0.5), nz - 1, nx - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=std.dtype, device=std.device)
    kernel = torch.exp(-0.5 * (offsets / width) ** 2)
    kernel = kernel / kernel.sum()
    var = std.reshape(-1, 1, nz, nx) ** 2
    var = F.conv2d(F.pad(var, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    var = F.conv2d(F.pad(var, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return var.sqrt().reshape(*lead, nz, nx)


def flag_score(std: torch.Tensor, null: torch.Tensor, contradiction: torch.Tensor | None,
               rule: FlagRule = FlagRule()) -> torch.Tensor:
    """The noisy-OR ``score`` in [0, 1] of the module notes from the cues' raw values, all ``(B, *image_shape)``:
    the posterior ``std`` (pooled here by ``rule.std_pool``), the estimate's unseen part ``null`` (signed) and
    ``contradiction`` ``|1[x̂ > t] − presence|`` (``None``: that cue left out); scales and weights from ``rule``."""
    w_std, w_presence, w_null = rule.weights
    # Noisy-OR: the chance that no cue fires is the product of the chances that each does not.
    quiet = 1 - w_std * (pooled_std(std, rule.std_pool) / rule.std_scale).clamp(max=1)
    quiet = quiet * (1 - w_null * (null.abs() / rule.null_scale).clamp(max=1))
    if contradiction is not None:
        quiet = quiet * (1 - w_presence * contradiction)
    return 1 - quiet


def hallucination_map(
    op: LinearOperator,
    estimate: torch.Tensor,
    posterior: PosteriorResult,
    rule: FlagRule = FlagRule(),
    *,
    op_norm: float | None = None,
) -> HallucinationResult:
    """Flag map of ``estimate`` ``(B, *op.image_shape)`` from the posterior samples of the same scans.

    Follows the rule in the module notes; ``op_norm`` is ‖A‖ if known (else estimated by power iteration). The
    presence cue is left out when ``posterior.presence`` is ``None``. Costs ``rule.null_iter`` forward-adjoint
    pairs (plus the norm estimate) and one CPU pass for the region filter.
    """
    x = _check_images(op, estimate, "estimate")
    require(x.shape == posterior.mean.shape, f"estimate {tuple(x.shape)} and posterior mean "
            f"{tuple(posterior.mean.shape)} differ in shape", "estimate")
    norm = (operator_norm(op, dtype=x.dtype, device=x.device) if op_norm is None
            else check_number(op_norm, "op_norm", minimum=0))
    null = null_space_component(op, x, lam=rule.null_lam_fraction * norm**2, n_iter=rule.null_iter)
    presence_cue = None
    if posterior.presence is not None and posterior.presence_threshold is not None:
        presence_cue = presence_contradiction(x, posterior.presence, posterior.presence_threshold)
    score = flag_score(posterior.std, null, presence_cue, rule)
    mask = remove_small_regions(score >= rule.threshold, rule.min_size)
    return HallucinationResult(score, mask, null)
