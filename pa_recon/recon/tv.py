"""Total-variation regularised least squares with optional non-negativity, by PDHG (Chambolle–Pock 2011)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pa_recon.checks import check_count, check_number
from pa_recon.recon.base import (
    LinearOperator,
    ReconResult,
    batch_dot,
    check_data,
    initial_image,
    operator_norm,
    require,
)

#: ‖∇‖² ≤ 8 for forward differences on a unit-spaced 2D grid.
_GRADIENT_NORM_SQ = 8.0
#: τσ‖K‖² stays this far below the convergence limit 1, because the power iteration underestimates ‖A‖.
_STEP_MARGIN = 0.95
#: Defaults of the ``tv`` method (and of the MAP start ``"tv"``): weight as a fraction of ``‖A‖²``, iterations.
TV_LAM_FRACTION = 1e-3
TV_ITERS = 200


def gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences of images ``(B, C, nz, nx)`` → ``(B, 2, C, nz, nx)`` (depth, lateral).

    Unit pixel spacing; the difference past the last row or column is 0 (Neumann boundary).
    """
    dz = F.pad(torch.diff(x, dim=-2), (0, 0, 0, 1))
    dx = F.pad(torch.diff(x, dim=-1), (0, 1))
    return torch.stack([dz, dx], dim=1)


def gradient_adjoint(g: torch.Tensor) -> torch.Tensor:
    """The exact adjoint of :func:`gradient` (minus the divergence): ``(B, 2, C, nz, nx)`` → ``(B, C, nz, nx)``."""
    gz, gx = g[:, 0, ..., :-1, :], g[:, 1, ..., :-1]
    return F.pad(gz, (0, 0, 1, 0)) - F.pad(gz, (0, 0, 0, 1)) + F.pad(gx, (1, 0)) - F.pad(gx, (0, 1))


def _pixel_norm(g: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((g * g).sum(dim=1))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Isotropic TV of images ``(B, C, nz, nx)``: ``Σ_pixels ‖∇x‖₂`` per image, shape ``(B,)``, image units."""
    return _pixel_norm(gradient(x)).flatten(1).sum(1)


def _project_ball(g: torch.Tensor, radius: float) -> torch.Tensor:
    """Project each pixel's gradient vector onto the 2-norm ball of ``radius``."""
    norm = _pixel_norm(g).unsqueeze(1)
    return torch.where(norm > radius, g * (radius / norm), g)


@torch.no_grad()
def tv_reconstruction(
    op: LinearOperator,
    y: torch.Tensor,
    *,
    lam: float,
    n_iter: int = 300,
    nonneg: bool = True,
    step: float | None = None,
    op_norm: float | None = None,
    x0: torch.Tensor | None = None,
) -> ReconResult:
    """Minimise ``‖A x − y‖² + lam · TV(x)`` (subject to ``x ≥ 0`` if ``nonneg``) for each scan of ``y``.

    ``y`` is ``(B, *op.data_shape)``; TV is :func:`total_variation` (unit pixel spacing). The data term is
    scaled as in :func:`~pa_recon.recon.cgls`, so ``lam`` is in data units² per image unit. PDHG runs on
    ``K = [A; μ∇]`` with ``μ = ‖A‖/√8``, so that both blocks have the same norm. ``op_norm`` is ‖A‖ if known;
    otherwise it is estimated by :func:`~pa_recon.recon.operator_norm`. ``step`` is the primal step ``τ``
    (default ``1/‖K‖``); the dual step is then set to ``σ = 0.95 / (τ ‖K‖²)``. Starts from ``x0`` (default
    zeros).

    Returns the images ``(B, *op.image_shape)`` and the objective per scan, history shape ``(n_iter + 1, B)``.
    PDHG does not decrease the objective at every step, only in the limit. Each iteration costs one forward
    and one adjoint.
    """
    y = check_data(op, y)
    lam = check_number(lam, "lam", minimum=0)
    n_iter = check_count(n_iter, "n_iter")
    if op_norm is None:
        op_norm = operator_norm(op, dtype=y.dtype, device=y.device)
    norm_a = check_number(op_norm, "op_norm", minimum=0)
    require(norm_a > 0, "the operator maps every image to zero", "op_norm")
    mu = norm_a / math.sqrt(_GRADIENT_NORM_SQ)
    k_norm_sq = 2 * norm_a**2
    tau = 1 / math.sqrt(k_norm_sq) if step is None else check_number(step, "step", above=0)
    sigma = _STEP_MARGIN / (tau * k_norm_sq)
    radius = lam / mu

    def objective(ax: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        residual = ax - y
        return batch_dot(residual, residual) + lam * total_variation(x)

    x = initial_image(op, y, x0)
    if nonneg:
        x = x.clamp_min(0)
    ax = op(x)
    x_bar, ax_bar = x, ax
    dual_data, dual_grad = torch.zeros_like(y), torch.zeros_like(gradient(x))
    history = [objective(ax, x)]
    for _ in range(n_iter):
        # Proximal step on the conjugate of ‖u − y‖², then projection for the conjugate of (lam/μ)‖·‖₂,₁.
        dual_data = (dual_data + sigma * (ax_bar - y)) / (1 + sigma / 2)
        dual_grad = _project_ball(dual_grad + sigma * mu * gradient(x_bar), radius)
        x_next = x - tau * (op.adjoint(dual_data) + mu * gradient_adjoint(dual_grad))
        if nonneg:
            x_next = x_next.clamp_min(0)
        ax_next = op(x_next)
        # A is linear, so A x̄ follows from the two exact forwards without a third one.
        x_bar, ax_bar = 2 * x_next - x, 2 * ax_next - ax
        x, ax = x_next, ax_next
        history.append(objective(ax, x))
    return ReconResult(x, torch.stack(history))
