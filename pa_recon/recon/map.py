"""Image-space MAP reconstruction with a learned prior, and the batched Adam loop it shares with latent-space MAP.

The objective, per scan with noise std ``σ`` (data units), is ``½‖A x − y‖² / σ² + λ · NLL(x [| c])`` in nats;
:mod:`pa_recon.recon.latent` minimises the same data term over the prior's latents. The data gradient
``Aᵀ(A x − y) / σ²`` uses the operator's exact adjoint (one forward and one adjoint per step), so the operator
needs no autograd support; only the prior is differentiated.

Stopping, per scan: the discrepancy principle stops a scan at the first iterate with ``‖A x − y‖² ≤ τ M σ²``
(``M`` data values per scan); a scan whose objective or gradient turns non-finite is returned at its last finite
iterate ("diverged"); otherwise it runs ``steps`` Adam steps ("max_steps"). Stopped scans are frozen while the
others go on, so every scan's result is the one it would get alone. The loop reads a value back from the device
only every ``check_every`` steps, to end early once all scans have stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from pa_recon.errors import PAReconError
from pa_recon.recon.backprojection import back_projection
from pa_recon.recon.base import (
    LinearOperator,
    batch_dot,
    check_data,
    check_number,
    initial_image,
    per_scan,
    require,
)
from pa_recon.recon.prior_protocol import ImagePrior, check_prior, prior_condition

#: Reason codes of :attr:`MAPResult.stopped`, by the integer each scan carries during the loop.
STOP_REASONS = ("max_steps", "discrepancy", "diverged")

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


class MAPResult(NamedTuple):
    """A MAP estimate per scan.

    ``image`` ``(B, *image_shape)``; ``history`` ``(n_done + 1, B)``, the objective (nats) at the start and after
    each step (constant once a scan has stopped; non-finite at the step where a scan diverged); ``stopped`` the
    reason each scan stopped (one of :data:`STOP_REASONS`); ``steps`` ``(B,)`` the Adam steps each scan took;
    ``latents`` the final latents of a latent-space MAP, else ``None``.
    """

    image: torch.Tensor
    history: torch.Tensor
    stopped: tuple[str, ...]
    steps: torch.Tensor
    latents: list[torch.Tensor] | None


@dataclass(frozen=True)
class AdamSettings:
    """Adam on a per-scan objective: at most ``steps`` steps; the learning rate falls geometrically from ``lr`` to
    ``lr · lr_decay`` over them (Adam with a constant rate hovers around the minimum instead of settling);
    discrepancy factor ``tau`` (``None``: never stop early); a device sync every ``check_every`` steps."""

    steps: int = 500
    lr: float = 1e-2
    lr_decay: float = 0.1
    tau: float | None = 1.0
    check_every: int = 10

    def __post_init__(self) -> None:
        require(isinstance(self.steps, int) and self.steps >= 0, f"must be an integer >= 0, got {self.steps}", "steps")
        require(check_number(self.lr, "lr") > 0, "must be positive", "lr")
        require(0 < check_number(self.lr_decay, "lr_decay") <= 1, "must be in (0, 1]", "lr_decay")
        if self.tau is not None:
            check_number(self.tau, "tau")
        require(isinstance(self.check_every, int) and self.check_every >= 1,
                f"must be an integer >= 1, got {self.check_every}", "check_every")


def check_sigma(sigma: float | torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-scan noise std ``(B,)`` in data units from a number or a ``(B,)`` tensor, on ``y``'s dtype and device."""
    try:
        s = torch.as_tensor(sigma).detach().to(dtype=y.dtype, device=y.device)
    except (TypeError, ValueError, RuntimeError):
        raise PAReconError(f"expected a number or a tensor, got {type(sigma).__name__}", field="sigma") from None
    require(s.ndim == 0 or tuple(s.shape) == (y.shape[0],),
            f"expected a number or shape ({y.shape[0]},), got {tuple(s.shape)}", "sigma")
    require(bool((torch.isfinite(s) & (s > 0)).all()), "must be positive and finite", "sigma")
    return s.expand(y.shape[0]).clone()


def chi_square(op: LinearOperator, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Reduced data misfit ``‖A x − y‖² / (σ² M)`` per scan ``(B,)``; about 1 for an image consistent with the
    data at noise std ``σ`` ``(B,)``, ``M`` data values per scan."""
    r = op(x) - y
    return batch_dot(r, r) / (sigma**2 * r[0].numel())


def minimise(
    op: LinearOperator,
    y: torch.Tensor,
    sigma: torch.Tensor,
    variables: list[torch.Tensor],
    image_of: Callable[[list[torch.Tensor]], torch.Tensor],
    penalty: Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor],
    opt: AdamSettings,
) -> tuple[list[torch.Tensor], torch.Tensor, tuple[str, ...], torch.Tensor]:
    """Minimise ``½‖A x − y‖²/σ² + penalty(v, x)``, ``x = image_of(v)``, over ``variables`` by batched Adam.

    ``variables``: tensors ``(B, ...)`` (not modified); ``image_of`` maps them to images ``(B, *op.image_shape)``
    and ``penalty`` to per-scan nats ``(B,)``, both differentiably. Stops as in the module notes. Returns the
    final variables, the history ``(n_done + 1, B)``, the stop reason per scan and the steps per scan ``(B,)``.
    """
    n_scans, var2 = y.shape[0], sigma**2
    target = None if opt.tau is None else opt.tau * y[0].numel() * var2
    active = torch.ones(n_scans, dtype=torch.bool, device=y.device)
    reason = torch.zeros(n_scans, dtype=torch.long, device=y.device)
    n_steps = torch.zeros(n_scans, dtype=torch.long, device=y.device)
    history = y.new_empty(opt.steps + 1, n_scans)
    moment1 = [torch.zeros_like(v) for v in variables]
    moment2 = [torch.zeros_like(v) for v in variables]
    previous, done = variables, 0
    for t in range(opt.steps + 1):
        with torch.enable_grad():
            leaves = [v.detach().requires_grad_() for v in variables]
            x = image_of(leaves)
            r = op(x.detach()) - y
            prior_term = penalty(leaves, x)
            data_grad = op.adjoint(r) / per_scan(var2, x)
            # d/dv of (data_grad · x) is the data term's gradient, as data_grad does not depend on v.
            grads = torch.autograd.grad(batch_dot(data_grad, x).sum() + prior_term.sum(), leaves)
        misfit = batch_dot(r, r)
        objective = 0.5 * misfit / var2 + prior_term.detach()
        history[t] = objective
        done = t
        finite = torch.isfinite(objective)
        for g in grads:
            finite &= torch.isfinite(g).flatten(1).all(1)
        diverged = active & ~finite
        reason = torch.where(diverged, STOP_REASONS.index("diverged"), reason)
        variables = [torch.where(per_scan(diverged, v), p, v) for v, p in zip(variables, previous)]
        n_steps = (n_steps - diverged.long()).clamp_min(0)
        active &= finite
        if target is not None:
            fits = active & (misfit <= target)
            reason = torch.where(fits, STOP_REASONS.index("discrepancy"), reason)
            active &= ~fits
        if t == opt.steps or (t % opt.check_every == 0 and not bool(active.any())):
            break
        lr = opt.lr * opt.lr_decay ** (t / max(opt.steps - 1, 1))
        bias1, bias2 = 1 - _BETA1 ** (t + 1), 1 - _BETA2 ** (t + 1)
        previous = variables
        moment1 = [_BETA1 * m + (1 - _BETA1) * g for m, g in zip(moment1, grads)]
        moment2 = [_BETA2 * m + (1 - _BETA2) * g * g for m, g in zip(moment2, grads)]
        variables = [torch.where(per_scan(active, v), v - lr * (m1 / bias1) / (torch.sqrt(m2 / bias2) + _EPS), v)
                     for v, m1, m2 in zip(variables, moment1, moment2)]
        n_steps += active.long()
    names = tuple(STOP_REASONS[int(code)] for code in reason.tolist())
    return variables, history[: done + 1], names, n_steps


def zero_latents(prior: ImagePrior, y: torch.Tensor) -> list[torch.Tensor]:
    """Zero latents of ``prior``, one ``(B, C, H, W)`` per latent shape, with ``y``'s batch, dtype and device."""
    return [y.new_zeros((y.shape[0], *shape)) for shape in prior.latent_shapes()]


def check_inputs(op: LinearOperator, y: object, sigma: float | torch.Tensor,
                 prior: object) -> tuple[torch.Tensor, torch.Tensor, ImagePrior]:
    """Validated data ``(B, *op.data_shape)``, per-scan noise std ``(B,)`` and prior of a MAP problem."""
    y = check_data(op, y)
    return y, check_sigma(sigma, y), check_prior(prior)


def map_image(
    op: LinearOperator,
    y: torch.Tensor,
    sigma: float | torch.Tensor,
    prior: ImagePrior,
    *,
    lam: float = 1.0,
    x0: torch.Tensor | Literal["auto", "backprojection", "prior"] = "auto",
    settings: AdamSettings = AdamSettings(),
) -> MAPResult:
    """Image-space MAP: minimise ``½‖A x − y‖²/σ² + lam · NLL(x [| c])`` for data ``y`` ``(B, *op.data_shape)``.

    ``sigma``: noise std in data units, a number or ``(B,)``. ``lam = 1`` is the Bayesian MAP when ``sigma`` and
    the prior are right; a conditional prior is conditioned on ``prior.condition(op, y)``. Start ``x0``:
    ``"backprojection"`` (scaled, clipped at 0), ``"prior"`` (``G(0; c)``, the image of the zero latent: the
    prior's central image, close to the conditional mean of a conditional prior), ``"auto"`` (``"prior"`` for a
    conditional prior, ``"backprojection"`` for a marginal one, whose central image ignores the data) or an
    image ``(B, *op.image_shape)``, which is copied. ``settings``: see :class:`AdamSettings`; the learning rate is in
    image units per step. Returns :class:`MAPResult` (``latents`` is ``None``).
    """
    y, sigma, prior = check_inputs(op, y, sigma, prior)
    lam = check_number(lam, "lam")
    cond = prior_condition(prior, op, y)
    if isinstance(x0, str):
        require(x0 in ("auto", "backprojection", "prior"),
                f"unknown start {x0!r}; use auto, backprojection, prior or an image", "x0")
        if x0 == "auto":
            x0 = "prior" if prior.conditional else "backprojection"
        with torch.no_grad():
            start = (back_projection(op, y, nonneg=True) if x0 == "backprojection"
                     else prior.generate(zero_latents(prior, y), cond))
        x = initial_image(op, y, start)
    else:
        x = initial_image(op, y, x0)
    (x,), history, stopped, steps = minimise(
        op, y, sigma, [x], lambda v: v[0], lambda v, image: lam * prior.nll(image, cond), settings)
    return MAPResult(x.detach(), history, stopped, steps, None)
