"""Tikhonov-regularised least squares by CGLS (conjugate gradients on the normal equations)."""

from __future__ import annotations

import torch

from pa_recon.checks import check_count, check_number
from pa_recon.recon.base import (
    LinearOperator,
    ReconResult,
    batch_dot,
    check_data,
    initial_image,
    per_scan,
    safe_divide,
)


def _damped_residual(r: torch.Tensor, x: torch.Tensor, lam: float) -> torch.Tensor:
    return torch.sqrt(batch_dot(r, r) + lam * batch_dot(x, x))


@torch.no_grad()
def cgls(
    op: LinearOperator,
    y: torch.Tensor,
    *,
    lam: float,
    n_iter: int = 100,
    tol: float = 1e-6,
    x0: torch.Tensor | None = None,
) -> ReconResult:
    """Minimise ``‖A x − y‖² + lam ‖x‖²`` for each scan of ``y`` ``(B, *op.data_shape)``.

    ``lam`` is in (data units / image units)²; :func:`~pa_recon.recon.lam_from_fraction` picks it relative to
    ``‖A‖²``, and ``lam = 0`` gives plain least squares, which is regularised only by stopping early. Starts from
    ``x0`` (default zeros). A scan stops when its normal-equation residual ``‖Aᵀ(y − A x) − lam x‖`` falls to
    ``tol · ‖Aᵀ y‖`` (so a warm start near the solution stops at once); the loop ends when all scans have
    stopped, or after ``n_iter`` iterations.

    Returns the images ``(B, *op.image_shape)`` and, as history, the damped residual
    ``sqrt(‖A x − y‖² + lam ‖x‖²)`` per scan (it never increases), shape ``(n_done + 1, B)``.
    Each iteration costs one forward and one adjoint.
    """
    y = check_data(op, y)
    lam = check_number(lam, "lam", minimum=0)
    n_iter = check_count(n_iter, "n_iter")
    tol = check_number(tol, "tol", minimum=0)
    x = initial_image(op, y, x0)
    aty = op.adjoint(y)
    stop_at = tol**2 * batch_dot(aty, aty)
    r = y - op(x)
    s = op.adjoint(r) - lam * x
    p = s
    gamma = batch_dot(s, s)
    active = gamma > stop_at
    history = [_damped_residual(r, x, lam)]
    for _ in range(n_iter):
        if not bool(active.any()):
            break
        q = op(p)
        # Stopped scans take zero steps, so their x and r stay as they are.
        alpha = torch.where(active, safe_divide(gamma, batch_dot(q, q) + lam * batch_dot(p, p)), 0.0)
        x = x + per_scan(alpha, x) * p
        r = r - per_scan(alpha, r) * q
        s = op.adjoint(r) - lam * x
        gamma_next = batch_dot(s, s)
        p = s + per_scan(safe_divide(gamma_next, gamma), p) * p
        gamma = gamma_next
        active = active & (gamma > stop_at)
        history.append(_damped_residual(r, x, lam))
    return ReconResult(x, torch.stack(history))
