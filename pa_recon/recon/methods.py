"""Reconstruction methods by name, with their settings as plain dicts (as params.yaml holds them).

Every method takes a :class:`Problem` (operator, data, noise level, optionally a prior) and its settings and
returns ``{"image": (B, 1, nz, nx), <map name>: (B, 1, nz, nx), ...}``. Regularisation weights of the
baselines are given as ``lam_fraction`` of ``‖A‖²`` (see :func:`lam_from_fraction`), so the same settings suit
any geometry; ``‖A‖`` is computed once per operator by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from pa_recon.errors import PAReconError
from pa_recon.recon.backprojection import back_projection
from pa_recon.recon.base import LinearOperator
from pa_recon.recon.cgls import cgls
from pa_recon.recon.hallucination import FlagRule, hallucination_map
from pa_recon.recon.latent import map_latent
from pa_recon.recon.map import AdamSettings, map_image
from pa_recon.recon.posterior import posterior_sampling
from pa_recon.recon.tv import tv_reconstruction


@dataclass
class Problem:
    """Data ``y (B, n_el, n_samples)`` of ``op`` with per-scan noise std ``sigma (B,)``; ``op_norm`` = ‖A‖."""

    op: LinearOperator
    y: torch.Tensor
    sigma: torch.Tensor
    op_norm: float
    prior: Any = None
    generator: torch.Generator | None = None


Method = Callable[[Problem, Mapping[str, Any]], dict[str, torch.Tensor]]


def _bp(p: Problem, s: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {"image": back_projection(p.op, p.y, filter=s["filter"], nonneg=s["nonneg"])}


def _cgls(p: Problem, s: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {"image": cgls(p.op, p.y, lam=s["lam_fraction"] * p.op_norm**2, n_iter=s["n_iter"], tol=s["tol"]).image}


def _tv(p: Problem, s: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    result = tv_reconstruction(p.op, p.y, lam=s["lam_fraction"] * p.op_norm**2, n_iter=s["n_iter"],
                               nonneg=s["nonneg"], op_norm=p.op_norm)
    return {"image": result.image}


def _adam(s: Mapping[str, Any]) -> AdamSettings:
    return AdamSettings(**{k: s[k] for k in ("steps", "lr", "lr_decay", "tau", "check_every")})


def _map(p: Problem, s: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {"image": map_image(p.op, p.y, p.sigma, p.prior, lam=s["lam"], x0=s["init"], settings=_adam(s)).image}


def _map_latent(p: Problem, s: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {"image": map_latent(p.op, p.y, p.sigma, p.prior, settings=_adam(s)).image}


def _posterior(p: Problem, s: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    post = posterior_sampling(p.op, p.y, p.sigma, p.prior, n_samples=s["n_samples"], temperature=s["temperature"],
                              chunk=s["chunk"], chi2_tol=s["chi2_tol"], presence_threshold=s["presence_threshold"],
                              generator=p.generator)
    rule = FlagRule(std_scale=s["std_scale"], null_scale=s["null_scale"], weights=tuple(s["weights"]),
                    threshold=s["threshold"], min_size=s["min_size"])
    flags = hallucination_map(p.op, post.mean, post, rule, op_norm=p.op_norm)
    return {"image": post.mean, "std": post.std, "presence": post.presence, "flag_score": flags.score,
            "flags": flags.mask.to(post.mean.dtype)}


_ADAM = {"steps": 500, "lr": 1e-2, "lr_decay": 0.1, "tau": 1.0, "check_every": 10}

#: name → (method, default settings, whether it needs a prior). The prior methods work with a marginal or a
#: conditional prior alike (the prior decides); ``posterior`` needs a conditional one.
REGISTRY: dict[str, tuple[Method, dict[str, Any], bool]] = {
    "bp": (_bp, {"filter": "none", "nonneg": True}, False),
    "cgls": (_cgls, {"lam_fraction": 1e-3, "n_iter": 50, "tol": 1e-6}, False),
    "tv": (_tv, {"lam_fraction": 1e-3, "n_iter": 200, "nonneg": True}, False),
    "map": (_map, {"lam": 1.0, "init": "backprojection", **_ADAM}, True),
    "map_latent": (_map_latent, {**_ADAM, "lr": 5e-2}, True),
    "posterior": (_posterior, {"n_samples": 32, "temperature": 1.0, "chunk": 8, "chi2_tol": 0.5,
                               "presence_threshold": 0.2, "std_scale": 0.2, "null_scale": 0.2,
                               "weights": [1.0, 1.0, 1.0], "threshold": 0.5, "min_size": 4}, True),
}
METHODS = tuple(REGISTRY)


def needs_prior(method: str) -> bool:
    """Whether ``method`` reconstructs with a learned prior."""
    method_settings(method)
    return REGISTRY[method][2]


def method_settings(method: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full settings of ``method``: its defaults updated by ``overrides`` (unknown keys are errors)."""
    if method not in REGISTRY:
        raise PAReconError(f"unknown method {method!r}; choose one of {sorted(REGISTRY)}", field="method")
    defaults = REGISTRY[method][1]
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise PAReconError(f"unknown settings {unknown} for {method}; known: {sorted(defaults)}",
                           field=f"reconstruct.{method}")
    return {**defaults, **overrides}


def reconstruct(method: str, problem: Problem, settings: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Run the named method; ``{"image": (B, 1, nz, nx), ...maps}``."""
    full = method_settings(method, settings)
    if REGISTRY[method][2] and problem.prior is None:
        raise PAReconError(f"method {method!r} needs a prior (--prior PRIOR.pt)", field="prior")
    return REGISTRY[method][0](problem, full)
