"""Posterior sampling with a conditional prior: ``x_i = G(z_i; c)``, ``z_i ~ N(0, τ² I)``, ``c`` from the data.

Optionally each draw is refined by randomise-then-optimise (RTO; Bardsley et al. 2014, here in the latent space):
with its latent ``ζ_i`` and a fresh noise draw ``ε_i ~ N(0, σ² I)``, the sample becomes ``G(z_i*; c)`` with
``z_i* = argmin_z ½‖A G(z; c) − (y + ε_i)‖² / σ² + ½‖z − ζ_i‖² / τ²`` (approximately: a fixed number of Adam
steps from ``ζ_i``). For a linear ``G`` this draws exactly from the posterior of the prior ``N(0, τ² I)`` on ``z``
and the data; for a flow it pulls the amortised draws towards the data, which a prior trained briefly cannot do
on its own.

Each sample's data consistency is its reduced misfit ``χ²_i = ‖A x_i − y‖² / (σ² M)`` (``M`` data values per
scan). For draws from the true posterior of a linear-Gaussian model ``χ²_i`` averages to about 1: the mean's
residual carries the noise the data could not explain and the spread of the samples adds back what the prior
left open. A sample is accepted when ``|χ²_i − 1| ≤ chi2_tol``; the mean, the pixel std and the presence
probability are taken over the accepted samples only. A scan with fewer than two accepted samples (one sample has
no spread, so its std would be 0) falls back to all its samples; its low accepted fraction (see
:class:`PosteriorResult`) is the warning.

:func:`scan_values` condenses a result to one value per scan, with a flag on scans that are suspect as a whole:
the reduced misfit of the mean far from 1 (out-of-distribution data, a wrong model or a wrong ``σ``) or no
accepted sample.

Samples are drawn in chunks of ``chunk`` per scan and folded into running moments (Chan et al.'s pairwise
update), so memory holds one chunk, not all samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from pa_recon.recon.adam import AdamSettings
from pa_recon.recon.descent import check_sigma, minimise
from pa_recon.checks import check_count, check_number
from pa_recon.recon.base import LinearOperator, batch_dot, check_data, per_scan, require
from pa_recon.recon.map_common import chi_square
from pa_recon.recon.prior_protocol import (Condition, ImagePrior, check_prior, prior_condition,
                                           repeat_condition)


#: Where the random draws come from: one generator for the batch, one per scan, or ``None`` (the global RNG).
Generators = torch.Generator | Sequence[torch.Generator] | None


class PosteriorResult(NamedTuple):
    """Summary of ``N`` posterior samples per scan; images are ``(B, *image_shape)``.

    ``mean``, ``std`` (unbiased: samples used minus one in the denominator) and ``presence`` (the fraction of
    samples above ``presence_threshold``; ``None`` without a threshold) over the accepted samples, or over all
    ``N`` where fewer than two were accepted; ``used`` ``(B,)`` int64, how many samples that is (an interval for
    the truth from ``mean`` and ``std`` needs it: :func:`pa_recon.metrics.interval_coverage`); ``chi2`` ``(B, N)``
    per sample and ``accepted`` ``(B, N)`` bool;
    ``chi2_mean`` ``(B,)`` the reduced misfit of the mean (well above 1: data out of the prior's distribution, or a
    wrong model or ``σ``);
    ``samples`` ``(B, keep, *image_shape)``, the first ``keep`` samples (accepted or not), or ``None``.
    """

    mean: torch.Tensor
    std: torch.Tensor
    used: torch.Tensor
    chi2: torch.Tensor
    accepted: torch.Tensor
    chi2_mean: torch.Tensor
    presence: torch.Tensor | None
    presence_threshold: float | None
    samples: torch.Tensor | None


class _Moments:
    """Per-scan weighted count, mean, sum of squared deviations and weight above a threshold, merged chunk by
    chunk (weights are 0 or 1)."""

    def __init__(self, like: torch.Tensor, threshold: float | None) -> None:
        self.count = like.new_zeros(like.shape[0])
        self.mean = torch.zeros_like(like)
        self.m2 = torch.zeros_like(like)
        self.above = torch.zeros_like(like)
        self.threshold = threshold

    def add(self, x: torch.Tensor, weight: torch.Tensor) -> None:
        """Fold in samples ``x`` ``(B, k, ...)`` with weights ``(B, k)``."""
        w = weight.reshape(*weight.shape, *([1] * (x.ndim - 2)))
        n = weight.sum(1)
        chunk_mean = (w * x).sum(1) / per_scan(n.clamp_min(1), self.mean)
        chunk_m2 = (w * (x - chunk_mean.unsqueeze(1)) ** 2).sum(1)
        total = self.count + n
        delta = chunk_mean - self.mean
        self.mean = self.mean + delta * per_scan(n / total.clamp_min(1), delta)
        self.m2 = self.m2 + chunk_m2 + delta**2 * per_scan(self.count * n / total.clamp_min(1), delta)
        self.count = total
        if self.threshold is not None:
            self.above = self.above + (w * (x > self.threshold)).sum(1)

    def std(self) -> torch.Tensor:
        return torch.sqrt(self.m2 / per_scan((self.count - 1).clamp_min(1), self.m2))

    def presence(self) -> torch.Tensor:
        return self.above / per_scan(self.count.clamp_min(1), self.above)


@torch.no_grad()
def posterior_sampling(
    op: LinearOperator,
    y: torch.Tensor,
    sigma: float | torch.Tensor,
    prior: ImagePrior,
    *,
    n_samples: int = 32,
    temperature: float = 1.0,
    chunk: int = 8,
    chi2_tol: float | None = 0.5,
    presence_threshold: float | None = 0.2,
    keep: int = 0,
    refine: AdamSettings | None = None,
    generator: Generators = None,
) -> PosteriorResult:
    """Draw ``n_samples`` images per scan of ``y`` ``(B, *op.data_shape)`` from a conditional prior.

    ``sigma``: noise std in data units, a number or ``(B,)``. ``temperature`` 1 samples the learned posterior
    itself; below 1 trades diversity for typicality and makes ``std`` an underestimate. ``chunk``: samples per scan
    per call of ``prior.generate`` (memory grows with ``B · chunk``). ``chi2_tol``: acceptance band around
    ``χ² = 1`` (``None`` keeps every sample); the default 0.5 drops samples whose residual holds 50 % more or less
    energy than the noise, far outside the spread ``√(2/M)`` of a consistent sample when ``M`` is in the
    thousands; with few data values widen it. ``presence_threshold``: the image value above which a pixel
    counts as vessel (0.2 for images in [0, 1], about half the faintest phantom vessel). ``keep`` samples per
    scan are returned for display. ``refine``: the Adam settings of the RTO refinement of every draw (see the module
    notes; its ``tau`` stops a draw once it fits its perturbed data; needs ``temperature`` > 0), ``None`` for plain
    draws. Latents and the RTO noise come from ``generator`` (on ``y``'s device) or the global RNG; a sequence of
    ``B`` generators gives each scan its own, which seeds one generator per sample, so a scan's draws depend neither
    on the scans batched with it nor on ``chunk``.
    """
    y = check_data(op, y)
    sigma = check_sigma(sigma, y)
    prior = check_prior(prior, op, conditional=True)
    temperature, tol, threshold = check_sampling(n_samples=n_samples, temperature=temperature, chunk=chunk,
                                                 chi2_tol=chi2_tol, presence_threshold=presence_threshold,
                                                 keep=keep, refine=refine)
    n_scans = y.shape[0]
    if isinstance(generator, Sequence):
        require(len(generator) == n_scans, f"needs one generator per scan ({n_scans}), got {len(generator)}",
                "generator")
    seeds = _sample_seeds(generator, n_samples)
    latent_shapes = prior.latent_shapes()
    shapes = [*latent_shapes, *([tuple(y.shape[1:])] if refine is not None else [])]
    cond = prior_condition(prior, op, y)
    image = y.new_zeros((n_scans, *op.image_shape))
    accepted_moments, all_moments = _Moments(image, threshold), _Moments(image, threshold)
    chi2_parts, accepted_parts, kept = [], [], []
    for start in range(0, n_samples, chunk):
        k = min(chunk, n_samples - start)
        normals = _normals(shapes, start, k, generator, seeds, y)
        latents = [temperature * z for z in normals[:len(latent_shapes)]]
        cond_k = repeat_condition(cond, k)
        y_k, sigma_k = y.repeat_interleave(k, dim=0), sigma.repeat_interleave(k)
        if refine is not None:
            latents = _randomise_then_optimise(op, y_k, sigma_k, prior, cond_k, latents, normals[-1], temperature,
                                               refine)
        x = prior.generate(latents, cond_k)
        chi2 = chi_square(op, x, y_k, sigma_k).view(n_scans, k)
        ok = torch.ones_like(chi2, dtype=torch.bool) if tol is None else (chi2 - 1).abs() <= tol
        x = x.reshape(n_scans, k, *op.image_shape)
        accepted_moments.add(x, ok.to(x.dtype))
        all_moments.add(x, torch.ones_like(chi2))
        chi2_parts.append(chi2)
        accepted_parts.append(ok)
        kept.append(x[:, : max(keep - start, 0)])
    use_accepted = accepted_moments.count >= 2
    use = per_scan(use_accepted, image)
    mean = torch.where(use, accepted_moments.mean, all_moments.mean)
    std = torch.where(use, accepted_moments.std(), all_moments.std())
    presence = None if threshold is None else torch.where(use, accepted_moments.presence(), all_moments.presence())
    return PosteriorResult(
        mean=mean,
        std=std,
        used=torch.where(use_accepted, accepted_moments.count, all_moments.count).round().long(),
        chi2=torch.cat(chi2_parts, dim=1),
        accepted=torch.cat(accepted_parts, dim=1),
        chi2_mean=chi_square(op, mean, y, sigma),
        presence=presence,
        presence_threshold=threshold,
        samples=torch.cat(kept, dim=1) if keep else None,
    )


def check_sampling(*, n_samples: int, temperature: float, chunk: int, chi2_tol: float | None,
                   presence_threshold: float | None, keep: int = 0,
                   refine: AdamSettings | None = None) -> tuple[float, float | None, float | None]:
    """Check the settings of :func:`posterior_sampling` (same names and meaning); returns ``temperature``,
    ``chi2_tol`` and ``presence_threshold`` as floats (the last two may be ``None``)."""
    n_samples = check_count(n_samples, "n_samples", minimum=2)  # one sample has no spread
    check_count(chunk, "chunk", minimum=1)
    check_count(keep, "keep", maximum=n_samples)
    temperature = check_number(temperature, "temperature", minimum=0)
    require(refine is None or temperature > 0, "must be positive for refined samples", "temperature")
    tol = None if chi2_tol is None else check_number(chi2_tol, "chi2_tol", minimum=0)
    threshold = None if presence_threshold is None else check_number(presence_threshold, "presence_threshold")
    return temperature, tol, threshold


def _sample_seeds(generator: Generators, n_samples: int) -> list[list[int]] | None:
    """With one generator per scan, a seed for each of the scan's ``n_samples`` samples; else ``None``."""
    if generator is None or isinstance(generator, torch.Generator):
        return None
    return [torch.randint(0, 2**62, (n_samples,), generator=g, device=g.device).tolist() for g in generator]


def _normals(shapes: Sequence[tuple[int, ...]], start: int, k: int, generator: Generators,
             seeds: list[list[int]] | None, like: torch.Tensor) -> list[torch.Tensor]:
    """Standard normal values ``(B·k, *shape)`` for each of ``shapes``, for samples ``start … start + k − 1`` of the
    ``B`` scans of ``like`` (each scan's ``k`` rows together), in ``like``'s dtype and device. Without ``seeds`` from
    ``generator``, one call per shape; with them, each sample's values from a generator of its own seed."""
    if seeds is None:
        return [torch.randn((like.shape[0], k, *shape), generator=generator, dtype=like.dtype,
                            device=like.device).flatten(0, 1) for shape in shapes]
    sizes = [math.prod(shape) for shape in shapes]
    flat = torch.stack([torch.randn(sum(sizes), generator=torch.Generator(like.device).manual_seed(seed),
                                    dtype=like.dtype, device=like.device)
                        for scan in seeds for seed in scan[start:start + k]])
    return [part.reshape(-1, *shape) for part, shape in zip(flat.split(sizes, dim=1), shapes)]


def _randomise_then_optimise(op: LinearOperator, y: torch.Tensor, sigma: torch.Tensor, prior: ImagePrior,
                             cond: Condition | None, draws: list[torch.Tensor], noise: torch.Tensor,
                             temperature: float, settings: AdamSettings) -> list[torch.Tensor]:
    """RTO latents of the draws ``ζ`` (one list entry per latent level, batch ``B·k``) for data ``y`` ``(B·k, ...)``,
    noise std ``sigma`` ``(B·k,)`` and standard normal ``noise`` like ``y``: minimise
    ``½‖A G(z; c) − (y + ε)‖²/σ² + ½‖z − ζ‖²/τ²`` from ``ζ``, with ``ε = σ · noise``."""
    perturbed = y + per_scan(sigma, y) * noise
    scale = 0.5 / temperature**2

    def penalty(z: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        return scale * torch.stack([batch_dot(a - b, a - b) for a, b in zip(z, draws)]).sum(0)

    return minimise(op, perturbed, sigma, draws, lambda z: prior.generate(z, cond), penalty, settings)[0]


def scan_values(result: PosteriorResult, *, scan_chi2_tol: float = 0.5) -> dict[str, torch.Tensor]:
    """One value per scan ``(B,)`` of a posterior result: ``acceptance``, the fraction of accepted samples;
    ``samples``, the number of samples behind the mean and std (``result.used``); ``chi2_median``, the median
    sample χ²; and ``scan_flag`` (bool), true where the whole scan is suspect.

    The rule: a scan is flagged when the χ² of its mean (``result.chi2_mean``) lies outside
    ``1 ± scan_chi2_tol``, or when none of its samples was accepted. Far above 1 the data hold what the prior
    cannot explain (out-of-distribution data, a wrong model, ``σ`` too small); far below 1 the mean fits the
    noise (``σ`` too large). The mean of a consistent posterior sits below 1 by about ``p / M`` (``p`` well
    determined pixels, ``M`` data values), which is under 0.35 on the pipeline's geometries, so the default band
    0.5 (as the default sample band ``chi2_tol``) leaves in-distribution scans unflagged.
    """
    tol = check_number(scan_chi2_tol, "scan_chi2_tol", minimum=0)
    return {
        "acceptance": result.accepted.to(result.chi2.dtype).mean(1),
        "samples": result.used,
        "chi2_median": result.chi2.quantile(0.5, dim=1),
        "scan_flag": ((result.chi2_mean - 1).abs() > tol) | ~result.accepted.any(1),
    }
