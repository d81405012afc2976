"""An analytic stand-in for the flow priors: a Gaussian ``x = m + L z``, and the exact linear-Gaussian posterior.

With a dense operator ``A`` and noise std ``σ`` everything the recon layer computes has a closed form: the MAP
(= posterior mean) ``m_post = C (Aᵀy/σ² + Σ⁻¹μ)`` with ``C = (AᵀA/σ² + Σ⁻¹)⁻¹``, and the posterior itself.
The conditional variant's condition is that exact posterior mean and its covariance is ``C``, so its samples
are exact posterior samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pa_recon.recon.descent import Objective, Penalty
from pa_recon.recon.prior_protocol import Condition


class GaussianPrior:
    """``N(mean, L Lᵀ)`` over images ``(B, *image_shape)``; the whitened latent ``z`` is split into latents of
    ``latent_shapes`` (sizes summing to the pixel count) to exercise multi-latent code paths.

    Marginal when ``condition_fn`` is ``None``; otherwise ``condition(op, y) = condition_fn(y)`` is the mean, and
    ``prepare_condition`` gives it as a list of one flat ``(B, n)`` "feature map", as a flow gives its encoder's
    features, so the recon layer's code paths for both forms of a condition run.
    """

    def __init__(self, mean: torch.Tensor, chol: torch.Tensor, image_shape: tuple[int, ...],
                 latent_shapes: list[tuple[int, int, int]],
                 condition_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.mean, self.chol, self.image_shape = mean, chol, image_shape
        self._latent_shapes = latent_shapes
        self.condition_fn = condition_fn
        self.conditional = condition_fn is not None

    def _centre(self, cond: Condition | None, batch: int) -> torch.Tensor:
        if not self.conditional:
            return self.mean.expand(batch, -1)
        return cond.flatten(1) if isinstance(cond, torch.Tensor) else cond[0]

    def condition(self, op: object, y: torch.Tensor) -> torch.Tensor | None:
        return self.condition_fn(y).reshape(y.shape[0], *self.image_shape) if self.condition_fn else None

    def prepare_condition(self, cond: torch.Tensor) -> list[torch.Tensor]:
        return [cond.flatten(1)]

    def nll(self, x: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        w = torch.linalg.solve_triangular(self.chol, (x.flatten(1) - self._centre(cond, x.shape[0])).T, upper=False)
        n = w.shape[0]
        log_det = 2 * torch.log(torch.diagonal(self.chol)).sum()
        return 0.5 * (w * w).sum(0) + 0.5 * (log_det + n * math.log(2 * math.pi))

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        return list(self._latent_shapes)

    def generate(self, latents: list[torch.Tensor], cond: Condition | None = None) -> torch.Tensor:
        z = torch.cat([a.flatten(1) for a in latents], dim=1)
        return (self._centre(cond, z.shape[0]) + z @ self.chol.T).reshape(z.shape[0], *self.image_shape)

    def encode(self, x: torch.Tensor, cond: Condition | None = None) -> list[torch.Tensor]:
        d = x.flatten(1) - self._centre(cond, x.shape[0])
        z = torch.linalg.solve_triangular(self.chol, d.T, upper=False).T
        sizes = [math.prod(s) for s in self._latent_shapes]
        return [part.reshape(x.shape[0], *s) for part, s in zip(z.split(sizes, dim=1), self._latent_shapes)]

    def sample(self, n: int, cond: torch.Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        latents = [temperature * torch.randn((n, *s), generator=generator, dtype=self.chol.dtype)
                   for s in self._latent_shapes]
        return self.generate(latents, None if cond is None else cond.expand(n, *cond.shape[1:]))


def gaussian_posterior(matrix: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor, mean: torch.Tensor,
                       cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean ``(B, n)`` and covariance ``(B, n, n)`` of ``x ~ N(mean, cov)`` given ``y = A x + N(0, σ²)``
    for data ``(B, ...)`` and per-scan ``σ`` ``(B,)``."""
    precision = torch.linalg.inv(cov)
    post_cov = torch.linalg.inv(matrix.T @ matrix / sigma[:, None, None] ** 2 + precision)
    rhs = y.flatten(1) @ matrix / sigma[:, None] ** 2 + mean @ precision
    return (post_cov @ rhs[..., None])[..., 0], post_cov


def random_covariance(n: int, std_range: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """A dense SPD ``(n, n)`` float64 matrix with eigenvalues spread log-uniformly over ``std_range²``."""
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    stds = torch.logspace(math.log10(std_range[0]), math.log10(std_range[1]), n, dtype=torch.float64)
    return q @ torch.diag(stds**2) @ q.T


#: Latent split of a (1, 4, 5) image (20 pixels) into two latents.
LATENT_SHAPES = [(1, 2, 5), (2, 1, 5)]


@dataclass
class GaussianCase:
    """Images ``x ~ N(mean, cov)`` ``(B, 1, 4, 5)``, their data ``y = A x + noise``, the stated ``sigma`` ``(B,)``
    and a prior; ``post_mean`` ``(B, n)`` and ``post_cov`` ``(B, n, n)`` are the exact posterior under ``sigma``."""

    op: Any
    prior: GaussianPrior
    mean: torch.Tensor
    cov: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    sigma: torch.Tensor
    post_mean: torch.Tensor
    post_cov: torch.Tensor

    def objective(self, x: torch.Tensor, y: torch.Tensor | None = None, prior: Any = None) -> torch.Tensor:
        """``½‖A x − y‖²/σ² + NLL(x)`` ``(B,)`` written out by hand (data ``y``, prior: the case's by default)."""
        r = self.op(x) - (self.y if y is None else y)
        return 0.5 * (r * r).flatten(1).sum(1) / self.sigma**2 + (prior or self.prior).nll(x)

    def descent_objective(self, penalty: Penalty | None = None) -> Objective:
        """The recon layer's :class:`Objective` on image variables, with the prior's NLL as the penalty unless
        ``penalty`` is given."""
        return Objective(self.op, self.y, self.sigma**2, lambda v: v[0],
                         penalty or (lambda v, image: self.prior.nll(image)))


def gaussian_case(op: Any, sigma: list[float], *, noise: float | None = None, conditional: bool = False,
                  std_range: tuple[float, float] = (0.1, 0.5), seed: int = 3) -> GaussianCase:
    """A linear-Gaussian problem on ``op`` (a dense operator with ``.matrix``, images (1, 4, 5)), one scan per
    entry of ``sigma``; the data noise is ``noise`` (default: each scan's ``sigma``). The conditional prior is
    the exact posterior (all ``sigma`` must then be equal): mean from the data, covariance ``post_cov``."""
    g = torch.Generator().manual_seed(seed)
    n = op.matrix.shape[1]
    cov = random_covariance(n, std_range, g)
    mean = 0.5 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    s = torch.tensor(sigma, dtype=torch.float64)
    x = (mean + torch.randn(len(sigma), n, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T)
    x = x.reshape(len(sigma), *op.image_shape)
    std = s if noise is None else torch.full_like(s, noise)
    y = op(x) + std[:, None, None] * torch.randn(len(sigma), *op.data_shape, generator=g, dtype=torch.float64)
    post_mean, post_cov = gaussian_posterior(op.matrix, y, s, mean, cov)
    if conditional:
        assert torch.all(s == s[0]), "the conditional stand-in needs one sigma for all scans"
        prior = GaussianPrior(mean, torch.linalg.cholesky(post_cov[0]), op.image_shape, LATENT_SHAPES,
                              lambda data: gaussian_posterior(op.matrix, data, s[:1].expand(len(data)), mean, cov)[0])
    else:
        prior = GaussianPrior(mean, torch.linalg.cholesky(cov), op.image_shape, LATENT_SHAPES)
    return GaussianCase(op, prior, mean, cov, x, y, s, post_mean, post_cov)
