"""Reconstruction methods by name, with their settings as plain dicts (as params.yaml holds them).

Every method takes a :class:`Problem` (operator, data, noise level, optionally a prior) and its settings and
returns a :class:`MethodOutput`: image-shaped maps and one value per scan. :func:`reconstruct` adds the χ² of
the image to every method's values, so each result says how well it fits its data. Regularisation weights of the
baselines are given as ``lam_fraction`` of ``‖A‖²`` (see :func:`lam_from_fraction`), so the same settings suit
any geometry; ``‖A‖`` is computed once per operator by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch

from pa_recon.errors import PAReconError
from pa_recon.recon.adam import AdamSettings
from pa_recon.recon.backprojection import back_projection, check_filter
from pa_recon.checks import check_count, check_number
from pa_recon.recon.base import LinearOperator, check_data, require
from pa_recon.recon.cgls import cgls
from pa_recon.recon.descent import STOP_REASONS
from pa_recon.recon.hallucination import FlagRule, hallucination_map
from pa_recon.recon.latent import LATENT_SETTINGS, map_latent
from pa_recon.recon.lbfgs import LBFGSSettings
from pa_recon.recon.map import START_KINDS, check_start, map_image
from pa_recon.recon.map_common import MAPResult, chi_square, total_sigma
from pa_recon.recon.posterior import Generators, check_sampling, posterior_sampling, scan_values
from pa_recon.recon.tv import TV_ITERS, TV_LAM_FRACTION, tv_reconstruction


#: The kinds of prior that a per-kind setting names, indexed by the prior's ``conditional`` (False, True).
PRIOR_KINDS = ("marginal", "conditional")


@dataclass
class Problem:
    """Data ``y (B, n_el, n_samples)`` of ``op`` with per-scan noise std ``sigma (B,)`` (or one number for every
    scan; 0 where unknown); ``op_norm`` = ‖A‖;
    ``generator``: where random methods draw from (one generator, one per scan, or ``None`` for the global RNG);
    ``latent_start`` ``(B, 1, nz, nx)``: ``map``'s latent start when it is already made (see
    :func:`latent_start_mismatch`), else ``None``."""

    op: LinearOperator
    y: torch.Tensor
    sigma: torch.Tensor | float
    op_norm: float
    prior: Any = None
    generator: Generators = None
    latent_start: torch.Tensor | None = None


@dataclass(frozen=True)
class MethodOutput:
    """A method's result for ``B`` scans.

    ``maps``: image-shaped results ``{name: (B, 1, nz, nx)}``, always ``"image"``. ``per_scan``: one value per
    scan ``{name: (B,)}``; from :func:`reconstruct` always ``"chi2"``, the reduced misfit ``‖A x − y‖²/(σ² M)``
    of the image (dimensionless, about 1 when the image explains the data down to the noise; NaN for a scan
    with ``σ = 0``). ``labels``: for each per-scan value that is an integer code, the name of each code
    (``labels[name][code]``).
    """

    maps: dict[str, torch.Tensor]
    per_scan: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)


Method = Callable[[Problem, Mapping[str, Any]], MethodOutput]


class MethodEntry(NamedTuple):
    """A named method: ``run``, its ``defaults``, the ``prior_kinds`` it works with (empty: it takes no prior),
    and ``check``, which raises a :class:`~pa_recon.errors.PAReconError` (field: the setting's key) for a bad value
    in full settings."""

    run: Method
    defaults: dict[str, Any]
    prior_kinds: tuple[str, ...]
    check: Callable[[Mapping[str, Any]], None]


def _bp(p: Problem, s: Mapping[str, Any]) -> MethodOutput:
    return MethodOutput({"image": back_projection(p.op, p.y, filter=s["filter"], nonneg=s["nonneg"])})


def _cgls(p: Problem, s: Mapping[str, Any]) -> MethodOutput:
    result = cgls(p.op, p.y, lam=s["lam_fraction"] * p.op_norm**2, n_iter=s["n_iter"], tol=s["tol"])
    return MethodOutput({"image": result.image})


def _tv(p: Problem, s: Mapping[str, Any]) -> MethodOutput:
    result = tv_reconstruction(p.op, p.y, lam=s["lam_fraction"] * p.op_norm**2, n_iter=s["n_iter"],
                               nonneg=s["nonneg"], op_norm=p.op_norm)
    return MethodOutput({"image": result.image})


def descent_settings(s: Mapping[str, Any]) -> AdamSettings | LBFGSSettings:
    """The step rule ``s["optimizer"]`` (``adam`` or ``lbfgs``) with its settings from ``s``, a ``map`` or
    ``map_latent`` settings block (:func:`method_settings`)."""
    common = {k: s[k] for k in ("steps", "lr", "tau", "check_every", "cuda_graph")}
    require(s["optimizer"] in OPTIMIZERS, f"unknown optimizer {s['optimizer']!r}; use one of {', '.join(OPTIMIZERS)}",
            "optimizer")
    if s["optimizer"] == "lbfgs":
        return LBFGSSettings(memory=s["memory"], **common)
    return AdamSettings(lr_decay=s["lr_decay"], **common)


def _map_output(result: MAPResult) -> MethodOutput:
    """The MAP image; per scan the reason it stopped (a code into :data:`STOP_REASONS`), its steps and its final
    objective (nats), and for an image-space MAP its start (a code into :data:`START_KINDS`) and the NLL per pixel
    of a latent start."""
    def codes(names: tuple[str, ...], labels: tuple[str, ...]) -> torch.Tensor:
        return torch.tensor([labels.index(name) for name in names], device=result.steps.device)

    per_scan = {"stop_reason": codes(result.stopped, STOP_REASONS), "steps": result.steps,
                "objective": result.history[-1]}
    labels = {"stop_reason": STOP_REASONS}
    if result.starts is not None:
        per_scan["start"], labels["start"] = codes(result.starts, START_KINDS), START_KINDS
    if result.start_nll is not None:
        per_scan["start_nll"] = result.start_nll
    return MethodOutput({"image": result.image}, per_scan, labels)


def _likelihood_sigma(p: Problem, s: Mapping[str, Any]) -> torch.Tensor:
    """The per-scan misfit std ``(B,)`` the prior methods weight the data by: noise and ``model_error``."""
    return total_sigma(p.y, p.sigma, s["model_error"])


def _latent_start(s: Mapping[str, Any]) -> AdamSettings | LBFGSSettings:
    """``s``'s step rule for ``latent_steps`` steps at the rate, rate decay and discrepancy factor of
    :data:`LATENT_SETTINGS`."""
    return descent_settings({**s, "steps": s["latent_steps"], "lr": LATENT_SETTINGS.lr,
                             "lr_decay": LATENT_SETTINGS.lr_decay, "tau": LATENT_SETTINGS.tau})


def latent_start_mismatch(map_settings: Mapping[str, Any], latent_settings: Mapping[str, Any]) -> str | None:
    """Why a ``map_latent`` run with ``latent_settings`` does not make the latent start of a ``map`` run with
    ``map_settings`` (both complete, as :func:`method_settings` returns them), or ``None`` when it does: the same
    step rule and ``model_error``. On the same data and prior its images are then that start."""
    ours, theirs = _latent_start(map_settings), descent_settings(latent_settings)
    if ours != theirs:
        return f"its latent MAP ran {theirs}, this run's latent start takes {ours}"
    if map_settings["model_error"] != latent_settings["model_error"]:
        return (f"its latent MAP ran with model_error {latent_settings['model_error']}, this run's latent start "
                f"takes {map_settings['model_error']}")
    return None


def _prior_weight(p: Problem, s: Mapping[str, Any]) -> float:
    """``lam``, or its entry for the problem's kind of prior when it is a mapping."""
    lam = s["lam"]
    return lam[PRIOR_KINDS[p.prior.conditional]] if isinstance(lam, Mapping) else lam


def _map(p: Problem, s: Mapping[str, Any]) -> MethodOutput:
    return _map_output(map_image(p.op, p.y, _likelihood_sigma(p, s), p.prior, lam=_prior_weight(p, s),
                                 x0=s["init"], settings=descent_settings(s), op_norm=p.op_norm,
                                 latent_settings=_latent_start(s), latent_nll_max=s["latent_nll_max"],
                                 latent_start=p.latent_start))


def _map_latent(p: Problem, s: Mapping[str, Any]) -> MethodOutput:
    return _map_output(map_latent(p.op, p.y, _likelihood_sigma(p, s), p.prior, settings=descent_settings(s)))


def flag_rule(s: Mapping[str, Any]) -> FlagRule:
    """The :class:`FlagRule` of ``posterior`` settings ``s`` (as :func:`method_settings` completes them)."""
    return FlagRule(std_scale=s["std_scale"], std_pool=s["std_pool"], null_scale=s["null_scale"],
                    weights=tuple(s["weights"]), threshold=s["threshold"], min_size=s["min_size"])


def _refine(s: Mapping[str, Any]) -> AdamSettings | None:
    return (AdamSettings(steps=s["refine_steps"], lr=s["refine_lr"], tau=None, cuda_graph=s["cuda_graph"])
            if s["refine_steps"] else None)


def _posterior(p: Problem, s: Mapping[str, Any]) -> MethodOutput:
    post = posterior_sampling(p.op, p.y, _likelihood_sigma(p, s), p.prior, n_samples=s["n_samples"],
                              temperature=s["temperature"], chunk=s["chunk"], chi2_tol=s["chi2_tol"],
                              presence_threshold=s["presence_threshold"], refine=_refine(s), generator=p.generator)
    flags = hallucination_map(p.op, post.mean, post, flag_rule(s), op_norm=p.op_norm)
    maps = {"image": post.mean, "std": post.std, "presence": post.presence, "flag_score": flags.score,
            "flags": flags.mask.to(post.mean.dtype)}
    return MethodOutput(maps, scan_values(post, scan_chi2_tol=s["scan_chi2_tol"]))


def _check_bool(s: Mapping[str, Any], key: str) -> None:
    require(isinstance(s[key], bool), f"must be true or false, got {s[key]!r}", key)


def _check_numbers(s: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        check_number(s[key], key, minimum=0)


def _check_bp(s: Mapping[str, Any]) -> None:
    check_filter(s["filter"])
    _check_bool(s, "nonneg")


def _check_cgls(s: Mapping[str, Any]) -> None:
    _check_numbers(s, "lam_fraction", "tol")
    check_count(s["n_iter"], "n_iter", minimum=1)


def _check_tv(s: Mapping[str, Any]) -> None:
    _check_numbers(s, "lam_fraction")
    check_count(s["n_iter"], "n_iter", minimum=1)
    _check_bool(s, "nonneg")


def _check_map(s: Mapping[str, Any]) -> None:
    _check_numbers(s, "model_error")
    lam = s["lam"]
    if isinstance(lam, Mapping):
        require(set(lam) == set(PRIOR_KINDS), f"expected a number or one per kind of prior ({', '.join(PRIOR_KINDS)}), "
                f"got the keys {sorted(lam)}", "lam")
        for kind in PRIOR_KINDS:
            check_number(lam[kind], f"lam.{kind}", minimum=0)
    else:
        check_number(lam, "lam", minimum=0)
    check_start(s["init"], "init")
    descent_settings(s)
    check_count(s["latent_steps"], "latent_steps")
    if s["latent_nll_max"] is not None:
        check_number(s["latent_nll_max"], "latent_nll_max")
        require(s["init"] == "auto", f"applies to init: auto only (init is {s['init']!r})", "latent_nll_max")


def _check_map_latent(s: Mapping[str, Any]) -> None:
    _check_numbers(s, "model_error")
    descent_settings(s)


#: The posterior settings behind the refinement's Adam settings, to name an error in them.
_REFINE_KEYS = {"steps": "refine_steps", "lr": "refine_lr"}


def _check_posterior(s: Mapping[str, Any]) -> None:
    _check_numbers(s, "scan_chi2_tol", "model_error")
    flag_rule(s)
    try:
        refine = _refine(s)
    except PAReconError as error:
        raise PAReconError(error.message, field=_REFINE_KEYS.get(error.field or "", error.field)) from None
    check_sampling(n_samples=s["n_samples"], temperature=s["temperature"], chunk=s["chunk"], chi2_tol=s["chi2_tol"],
                   presence_threshold=s["presence_threshold"], refine=refine)


#: The step rules of ``map`` and ``map_latent`` (``optimizer``).
OPTIMIZERS = ("adam", "lbfgs")
_DESCENT = {"optimizer": "adam", "steps": 500, "lr": 1e-2, "lr_decay": 0.1, "memory": 10, "tau": 1.0,
            "check_every": 10, "cuda_graph": True}
_LIKELIHOOD = {"model_error": 0.0}

#: name → :class:`MethodEntry` (method, default settings, the kinds of prior it takes, settings check). ``map`` and
#: ``map_latent`` work with a marginal or a conditional prior alike (the prior decides); ``posterior`` needs a
#: conditional one.
#:
#: ``optimizer`` (MAP, latent MAP): ``adam`` (:class:`~pa_recon.recon.adam.AdamSettings`: ``lr`` falls to
#: ``lr · lr_decay`` over the ``steps``) or ``lbfgs`` (:class:`~pa_recon.recon.lbfgs.LBFGSSettings`: ``memory``
#: curvature pairs, ``lr`` the size of a steepest-descent step; ``steps`` counts objective evaluations, its line
#: search included). ``map``'s latent start uses the same optimizer.
#:
#: ``cuda_graph`` (MAP, latent MAP, the posterior's refinement): replay each step as a captured CUDA graph on a
#: GPU (see :mod:`~pa_recon.recon.descent`).
#:
#: ``model_error`` (MAP, latent MAP, posterior): the operator's error relative to the data's RMS, added to the noise
#: in the data term (:func:`~pa_recon.recon.map_common.total_sigma`); the discrepancy stop and the posterior's χ²
#: acceptance and scan flag use that total too. The per-scan ``chi2`` of every method stays against the noise σ alone.
#:
#: ``map`` with ``init: latent`` (``auto`` for a conditional prior) starts from a latent-space MAP of ``latent_steps``
#: steps (the ``map_latent`` defaults otherwise); see :func:`~pa_recon.recon.map.map_image`. Its prior weight ``lam``
#: is a number or one number per kind of prior (``{marginal: 3.0, conditional: 1.0}``), so that one settings block
#: serves both priors, as ``init: auto`` does. ``latent_nll_max`` (nats per pixel, ``init: auto`` only; ``null``:
#: never): a scan whose latent start the prior scores above it starts from the TV image instead, since a latent MAP
#: the prior finds atypical marks data unlike its training images.
#:
#: ``posterior`` with ``refine_steps`` > 0 refines every draw by that many Adam steps (rate ``refine_lr`` in latent
#: units) of randomise-then-optimise; see :mod:`pa_recon.recon.posterior`.
#:
#: Per-scan values besides ``chi2``: ``map`` and ``map_latent`` give ``stop_reason`` (codes of
#: :data:`~pa_recon.recon.descent.STOP_REASONS`), ``steps`` and ``objective`` (the minimised objective at the image, in
#: nats: comparable between runs of the same method, prior, ``lam``, noise and ``model_error`` only); ``map`` also
#: ``start`` (codes of :data:`~pa_recon.recon.map.START_KINDS`) and, from a latent start, ``start_nll``; ``posterior``
#: gives ``acceptance``, ``chi2_median`` and ``scan_flag`` by the rule of
#: :func:`~pa_recon.recon.posterior.scan_values` with ``scan_chi2_tol``.
REGISTRY: dict[str, MethodEntry] = {
    "bp": MethodEntry(_bp, {"filter": "none", "nonneg": True}, (), _check_bp),
    "cgls": MethodEntry(_cgls, {"lam_fraction": 1e-3, "n_iter": 50, "tol": 1e-6}, (), _check_cgls),
    "tv": MethodEntry(_tv, {"lam_fraction": TV_LAM_FRACTION, "n_iter": TV_ITERS, "nonneg": True}, (), _check_tv),
    "map": MethodEntry(_map, {"lam": 1.0, "init": "auto", "latent_steps": 200, "latent_nll_max": None, **_DESCENT,
                               **_LIKELIHOOD}, PRIOR_KINDS, _check_map),
    "map_latent": MethodEntry(_map_latent, {**_DESCENT, "lr": 5e-2, **_LIKELIHOOD}, PRIOR_KINDS, _check_map_latent),
    "posterior": MethodEntry(_posterior, {"n_samples": 32, "temperature": 1.0, "chunk": 8, "chi2_tol": 0.5,
                                          "presence_threshold": 0.2, "std_scale": 0.2, "std_pool": 0.0,
                                          "null_scale": 0.2,
                                          "weights": [1.0, 1.0, 1.0], "threshold": 0.5, "min_size": 4,
                                          "scan_chi2_tol": 0.5, "refine_steps": 0, "refine_lr": 5e-2,
                                          "cuda_graph": True, **_LIKELIHOOD}, ("conditional",), _check_posterior),
}
METHODS = tuple(REGISTRY)


class MethodSpec(NamedTuple):
    """A method as the command line names it: a registered ``method`` and, for a prior method, the ``prior_kind``
    (one of :data:`PRIOR_KINDS`) that its prior must be, or ``None`` to take either."""

    method: str
    prior_kind: str | None = None

    @property
    def name(self) -> str:
        """The default name of its reconstruction: ``method`` or ``<method>_<prior_kind>``."""
        return "_".join(filter(None, self))

    @property
    def label(self) -> str:
        """Its command-line spelling: ``method`` or ``<method>-<prior_kind>``."""
        return "-".join(filter(None, self))


def method_names() -> list[str]:
    """Every name :func:`parse_method` takes: the methods, and each prior method with ``-<kind>`` for the kinds of
    prior it takes."""
    return [*METHODS, *(MethodSpec(m, kind).label for m in METHODS for kind in REGISTRY[m].prior_kinds)]


def parse_method(spec: str) -> MethodSpec:
    """``"map"`` → ``("map", None)``; ``"map-conditional"`` or ``"map_conditional"`` → ``("map", "conditional")``;
    anything else is an error that lists :func:`method_names`."""
    if spec in REGISTRY:
        return MethodSpec(spec)
    for kind in PRIOR_KINDS:
        for base in (spec.removesuffix(f"-{kind}"), spec.removesuffix(f"_{kind}")):
            if base != spec and base in REGISTRY and kind in REGISTRY[base].prior_kinds:
                return MethodSpec(base, kind)
    raise PAReconError(f"unknown method {spec!r}; choose one of {', '.join(method_names())}", field="method")


def needs_prior(method: str) -> bool:
    """Whether ``method`` reconstructs with a learned prior."""
    method_settings(method)
    return bool(REGISTRY[method].prior_kinds)


def check_prior_kind(spec: MethodSpec, conditional: bool) -> None:
    """Raise a :class:`~pa_recon.errors.PAReconError` (field ``prior``) unless a prior that is ``conditional`` (or
    marginal) suits ``spec``: one of the kinds its method takes, and ``spec.prior_kind`` where that is given."""
    method_settings(spec.method)
    kind = PRIOR_KINDS[bool(conditional)]
    wanted = (spec.prior_kind,) if spec.prior_kind else REGISTRY[spec.method].prior_kinds
    if not wanted:
        raise PAReconError(f"method {spec.label!r} takes no prior", field="prior")
    if kind not in wanted:
        raise PAReconError(f"method {spec.label!r} needs a {' or '.join(wanted)} prior, not a {kind} one",
                           field="prior")


def method_settings(method: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full settings of ``method``: its defaults updated by ``overrides``, every value checked (unknown keys
    and bad values are errors about ``reconstruct.<method>[.<key>]``, raised before any work starts)."""
    if method not in REGISTRY:
        raise PAReconError(f"unknown method {method!r}; choose one of {sorted(REGISTRY)}", field="method")
    defaults = REGISTRY[method].defaults
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise PAReconError(f"unknown settings {unknown} for {method}; known: {sorted(defaults)}",
                           field=f"reconstruct.{method}")
    full = {**defaults, **overrides}
    try:
        REGISTRY[method].check(full)
    except PAReconError as error:
        raise PAReconError(error.message, field=".".join(filter(None, ("reconstruct", method, error.field)))) from None
    return full


def reconstruct(method: str, problem: Problem, settings: Mapping[str, Any] | None = None) -> MethodOutput:
    """Run the named method; its maps (``"image"`` ``(B, 1, nz, nx)`` and others) and per-scan values, with
    ``"chi2"`` first (see :class:`MethodOutput`)."""
    full = method_settings(method, settings)
    if REGISTRY[method].prior_kinds and problem.prior is None:
        raise PAReconError(f"method {method!r} needs a prior (a prior file, e.g. --prior PRIOR.pt)", field="prior")
    problem = replace(problem, sigma=_per_scan_sigma(problem))
    out = REGISTRY[method].run(problem, full)
    return replace(out, per_scan={"chi2": _chi_square(problem, out.maps["image"]), **out.per_scan})


def _per_scan_sigma(p: Problem) -> torch.Tensor:
    """``p.sigma`` as ``(B,)`` on the data's dtype and device (σ = 0 stays: χ² is then NaN)."""
    y = check_data(p.op, p.y)
    sigma = torch.as_tensor(p.sigma, dtype=y.dtype, device=y.device)
    require(sigma.ndim == 0 or tuple(sigma.shape) == (y.shape[0],),
            f"expected a number or shape ({y.shape[0]},), got {tuple(sigma.shape)}", "sigma")
    return sigma.expand(y.shape[0])


@torch.no_grad()
def _chi_square(p: Problem, image: torch.Tensor) -> torch.Tensor:
    """:func:`chi_square` of ``image`` per scan ``(B,)``; NaN where ``σ = 0`` (undefined without a noise level)."""
    known = p.sigma > 0
    chi2 = chi_square(p.op, image, p.y, torch.where(known, p.sigma, torch.ones_like(p.sigma)))
    return torch.where(known, chi2, math.nan)
