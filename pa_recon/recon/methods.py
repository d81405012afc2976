"""Baseline reconstructions by name, with their settings as plain dicts (as params.yaml holds them).

Regularisation weights are given as ``lam_fraction`` of ``‖A‖²`` (see :func:`lam_from_fraction`), so the same
settings suit any geometry; ``‖A‖`` is computed once per operator by the caller and passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from pa_recon.errors import PAReconError
from pa_recon.recon.backprojection import back_projection
from pa_recon.recon.base import LinearOperator
from pa_recon.recon.cgls import cgls
from pa_recon.recon.tv import tv_reconstruction

Method = Callable[[LinearOperator, torch.Tensor, Mapping[str, Any], float], torch.Tensor]

#: Settings used when a key is absent (``lam_fraction`` multiplies ``‖A‖²``).
DEFAULTS: dict[str, dict[str, Any]] = {
    "bp": {"filter": "none", "nonneg": True},
    "cgls": {"lam_fraction": 1e-3, "n_iter": 50, "tol": 1e-6},
    "tv": {"lam_fraction": 1e-3, "n_iter": 200, "nonneg": True},
}

METHODS: dict[str, Method] = {
    "bp": lambda op, y, s, norm: back_projection(op, y, filter=s["filter"], nonneg=s["nonneg"]),
    "cgls": lambda op, y, s, norm: cgls(op, y, lam=s["lam_fraction"] * norm**2, n_iter=s["n_iter"],
                                        tol=s["tol"]).image,
    "tv": lambda op, y, s, norm: tv_reconstruction(op, y, lam=s["lam_fraction"] * norm**2, n_iter=s["n_iter"],
                                                   nonneg=s["nonneg"], op_norm=norm).image,
}


def method_settings(method: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full settings of ``method``: its defaults updated by ``overrides`` (unknown keys are errors)."""
    if method not in METHODS:
        raise PAReconError(f"unknown method {method!r}; choose one of {sorted(METHODS)}", field="method")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DEFAULTS[method]))
    if unknown:
        raise PAReconError(f"unknown settings {unknown} for {method}; known: {sorted(DEFAULTS[method])}",
                           field=f"reconstruct.{method}")
    return {**DEFAULTS[method], **overrides}


def reconstruct(method: str, op: LinearOperator, y: torch.Tensor, settings: Mapping[str, Any],
                op_norm: float) -> torch.Tensor:
    """Images ``(B, *op.image_shape)`` from data ``y`` ``(B, *op.data_shape)`` by the named method."""
    return METHODS[method](op, y, method_settings(method, settings), op_norm)
