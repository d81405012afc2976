"""recon layer: reconstruction algorithms, pure functions of (operator, data[, prior]).

Baselines: :func:`back_projection` (scaled, optionally filtered adjoint), :func:`cgls` (Tikhonov) and
:func:`tv_reconstruction` (TV + non-negativity). Each accepts any :class:`LinearOperator`.
"""

from pa_recon.recon.backprojection import back_projection, least_squares_scale, ramp_filter
from pa_recon.recon.base import LinearOperator, ReconResult, lam_from_fraction, operator_norm
from pa_recon.recon.cgls import cgls
from pa_recon.recon.methods import METHODS, Problem, method_settings, needs_prior, reconstruct
from pa_recon.recon.tv import gradient, gradient_adjoint, total_variation, tv_reconstruction

__all__ = [
    "METHODS",
    "LinearOperator",
    "Problem",
    "ReconResult",
    "back_projection",
    "cgls",
    "gradient",
    "gradient_adjoint",
    "lam_from_fraction",
    "least_squares_scale",
    "method_settings",
    "needs_prior",
    "operator_norm",
    "ramp_filter",
    "reconstruct",
    "total_variation",
    "tv_reconstruction",
]
