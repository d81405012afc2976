"""recon layer: reconstruction algorithms, pure functions of (operator, data[, prior]).

Baselines: :func:`back_projection` (scaled, optionally filtered adjoint), :func:`cgls` (Tikhonov) and
:func:`tv_reconstruction` (TV + non-negativity). Each accepts any :class:`LinearOperator`.

With a learned prior (any :class:`ImagePrior`): :func:`map_image` and :func:`map_latent` (MAP in image or latent
space), :func:`posterior_sampling` and :func:`hallucination_map` (flags of regions the data do not support).

By name: :func:`reconstruct` runs any of :data:`METHODS` and returns a :class:`MethodOutput`, the image-shaped
maps and one value per scan (the χ² of the image, and the stop reasons, acceptance or scan flags of a method).
"""

from pa_recon.recon.adam import AdamSettings
from pa_recon.recon.backprojection import back_projection, least_squares_scale, ramp_filter
from pa_recon.recon.base import LinearOperator, ReconResult, lam_from_fraction, operator_norm
from pa_recon.recon.cgls import cgls
from pa_recon.recon.descent import STOP_REASONS
from pa_recon.recon.hallucination import (
    FlagRule,
    HallucinationResult,
    flag_score,
    hallucination_map,
    null_space_component,
    pooled_std,
    presence_contradiction,
    remove_small_regions,
)
from pa_recon.recon.latent import map_latent
from pa_recon.recon.lbfgs import LBFGSSettings
from pa_recon.recon.map import START_KINDS, map_image, resolved_start
from pa_recon.recon.map_common import MAPResult, chi_square, total_sigma
from pa_recon.recon.methods import (
    METHODS,
    MethodOutput,
    MethodSpec,
    Problem,
    check_prior_kind,
    descent_settings,
    flag_rule,
    latent_start_mismatch,
    method_names,
    method_settings,
    needs_prior,
    parse_method,
    reconstruct,
)
from pa_recon.recon.posterior import PosteriorResult, posterior_sampling, scan_values
from pa_recon.recon.prior_protocol import ImagePrior
from pa_recon.recon.tv import gradient, gradient_adjoint, total_variation, tv_reconstruction

__all__ = [
    "METHODS",
    "START_KINDS",
    "STOP_REASONS",
    "AdamSettings",
    "FlagRule",
    "HallucinationResult",
    "ImagePrior",
    "LBFGSSettings",
    "LinearOperator",
    "MAPResult",
    "MethodOutput",
    "MethodSpec",
    "PosteriorResult",
    "Problem",
    "ReconResult",
    "back_projection",
    "cgls",
    "check_prior_kind",
    "descent_settings",
    "chi_square",
    "gradient",
    "gradient_adjoint",
    "flag_rule",
    "flag_score",
    "hallucination_map",
    "lam_from_fraction",
    "latent_start_mismatch",
    "least_squares_scale",
    "map_image",
    "map_latent",
    "method_names",
    "method_settings",
    "needs_prior",
    "null_space_component",
    "operator_norm",
    "parse_method",
    "pooled_std",
    "posterior_sampling",
    "presence_contradiction",
    "ramp_filter",
    "reconstruct",
    "remove_small_regions",
    "resolved_start",
    "scan_values",
    "total_sigma",
    "total_variation",
    "tv_reconstruction",
]
