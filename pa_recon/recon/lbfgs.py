"""L-BFGS as the step rule of the batched descent (:mod:`pa_recon.recon.descent`, which holds the stopping rules).

Every scan keeps its own curvature pairs, search direction and step length, so a scan's iterates are those it
would get alone. Each loop step evaluates the objective once, at every active scan's trial point ``v + α d``: a
trial that lowers the objective enough (Armijo's condition) is accepted, its curvature pair stored, and the next
direction comes from the two-loop recursion with step length 1; a trial that does not (or is not finite) halves
``α`` along the same direction. So a line search spends loop steps, and ``steps`` counts objective evaluations, as
for Adam. A scan whose step was halved ``MAX_HALVINGS`` times in a row is stopped as "stalled": no decrease is
left along its direction at float precision, usually because it sits at a minimum.

The first direction, and any while no curvature pair is stored or when the quasi-Newton direction does not
descend, is the steepest descent with a step of RMS size ``lr`` per variable element, since there is no curvature
to scale it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pa_recon.checks import check_count
from pa_recon.recon.base import batch_dot, per_scan
from pa_recon.recon.descent import LoopState, Objective, StepSettings

#: Armijo's sufficient-decrease constant.
ARMIJO = 1e-4
#: Consecutive step halvings after which a scan stops as "stalled" (2⁻³⁰ of the first trial step).
MAX_HALVINGS = 30
_CURVATURE_EPS = 1e-10  # a pair with s·y ≤ this · ‖s‖‖y‖ carries no usable curvature and is not stored


@dataclass(frozen=True)
class LBFGSSettings(StepSettings):
    """L-BFGS on a per-scan objective (fields of :class:`~pa_recon.recon.descent.StepSettings`, ``steps`` counting
    objective evaluations, ``lr`` the RMS size per variable element of a steepest-descent step, such as the first);
    ``memory`` curvature pairs per scan."""

    memory: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "memory", check_count(self.memory, "memory", minimum=1))

    def loop(self, objective: Objective, variables: list[torch.Tensor]) -> _LBFGSLoop:
        """The loop state of these settings for ``objective`` from ``variables`` (copied)."""
        return _LBFGSLoop(objective, variables, self)


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Per-scan inner product ``(B,)`` of two lists of ``(B, ...)`` tensors."""
    return torch.stack([batch_dot(u, v) for u, v in zip(a, b)]).sum(0)


class _LBFGSLoop(LoopState):
    """The loop's state, every tensor of it updated in place by :meth:`step` (so a CUDA graph can replay it).

    ``variables`` is the last accepted point, ``objective`` and ``grads`` are its value and gradient; ``trial`` is
    where the next step evaluates, ``variables + alpha · direction``. Curvature pairs, newest first: ``pairs_s``,
    ``pairs_y`` ``(memory, B, ...)`` per variable and ``rho = 1 / s·y`` ``(memory, B)``, 0 in unused slots (which
    the two-loop recursion then skips)."""

    def __init__(self, objective: Objective, variables: list[torch.Tensor], opt: LBFGSSettings) -> None:
        super().__init__(objective, variables, opt)
        self.opt: LBFGSSettings = opt
        n_scans = objective.y.shape[0]
        self.trial = [v.clone() for v in self.variables]
        self.grads = [torch.zeros_like(v) for v in self.variables]
        self.direction = [torch.zeros_like(v) for v in self.variables]
        self.pairs_s = [v.new_zeros((opt.memory, *v.shape)) for v in self.variables]
        self.pairs_y = [v.new_zeros((opt.memory, *v.shape)) for v in self.variables]
        self.rho = objective.y.new_zeros((opt.memory, n_scans))
        self.alpha = objective.y.new_zeros(n_scans)
        self.slope = objective.y.new_zeros(n_scans)  # grads · direction at the accepted point
        self.halvings = torch.zeros(n_scans, dtype=torch.long, device=objective.y.device)

    def state(self) -> list[torch.Tensor]:
        """Every tensor :meth:`step` writes."""
        return [*self.variables, *self.trial, *self.grads, *self.direction, *self.pairs_s, *self.pairs_y, self.rho,
                self.alpha, self.slope, self.halvings, *self.bookkeeping()]

    def _two_loop(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """``−H g`` for the inverse-Hessian estimate ``H`` of the stored pairs (``H₀ = γ I``, ``γ = s·y / y·y`` of
        the newest pair, 1 without one)."""
        q = [g.clone() for g in grads]
        coefficients = []
        for i in range(self.opt.memory):
            a = self.rho[i] * _dot([s[i] for s in self.pairs_s], q)
            q = [qv - per_scan(a, qv) * yv[i] for qv, yv in zip(q, self.pairs_y)]
            coefficients.append(a)
        newest_yy = _dot([yv[0] for yv in self.pairs_y], [yv[0] for yv in self.pairs_y])
        has_pair = self.rho[0] > 0
        gamma = torch.where(has_pair, 1 / torch.where(has_pair, self.rho[0] * newest_yy, 1), 1)
        r = [per_scan(gamma, qv) * qv for qv in q]
        for i in reversed(range(self.opt.memory)):
            b = self.rho[i] * _dot([yv[i] for yv in self.pairs_y], r)
            r = [rv + per_scan(coefficients[i] - b, rv) * s[i] for rv, s in zip(r, self.pairs_s)]
        return [-rv for rv in r]

    def step(self) -> None:
        """Evaluate the objective at the trial points, accept or halve, apply the stopping rules, then set the
        next trial point of every scan still active (none once ``t`` reaches ``steps``)."""
        opt = self.opt
        e = self.f(self.trial)
        first = self.t == 0
        diverged = self.active & first & ~e.finite
        self.stop(diverged, "diverged")
        decrease = e.objective <= self.objective + ARMIJO * self.alpha * self.slope
        accept = self.active & e.finite & (first | decrease)
        # The curvature pair of the accepted move (zero at the start, where trial = variables: not stored).
        s = [tv - v for tv, v in zip(self.trial, self.variables)]
        dy = [g_new - g for g_new, g in zip(e.grads, self.grads)]
        sy = _dot(s, dy)
        store = accept & (sy > _CURVATURE_EPS * torch.sqrt(_dot(s, s) * _dot(dy, dy)))
        for pairs, new in ((self.pairs_s, s), (self.pairs_y, dy)):
            for stored, n in zip(pairs, new):
                stored.copy_(torch.where(per_scan(store, n)[None], torch.cat([n[None], stored[:-1]]), stored))
        self.rho.copy_(torch.where(store[None], torch.cat([(1 / torch.where(store, sy, 1))[None], self.rho[:-1]]),
                                   self.rho))
        for v, tv in zip(self.variables, self.trial):
            v.copy_(torch.where(per_scan(accept, v), tv, v))
        for g, g_new in zip(self.grads, e.grads):
            g.copy_(torch.where(per_scan(accept, g), g_new, g))
        self.objective.copy_(torch.where(accept | diverged, e.objective, self.objective))
        if self.target is not None:
            self.stop(accept & (e.misfit <= self.target), "discrepancy")
        self.halvings.copy_(torch.where(accept, 0, self.halvings + (self.active & ~accept).long()))
        self.stop(self.active & (self.halvings >= MAX_HALVINGS), "stalled")

        quasi_newton = self._two_loop(self.grads)
        new_slope = _dot(self.grads, quasi_newton)
        descent = (self.rho[0] > 0) & (new_slope < 0) & torch.isfinite(new_slope)
        gg = _dot(self.grads, self.grads)
        n_elements = sum(g[0].numel() for g in self.grads)
        steepest_alpha = opt.lr / torch.sqrt(torch.clamp(gg / n_elements, min=torch.finfo(gg.dtype).tiny))
        for d, qn, g in zip(self.direction, quasi_newton, self.grads):
            d.copy_(torch.where(per_scan(accept, d), torch.where(per_scan(descent, d), qn, -g), d))
        self.slope.copy_(torch.where(accept, torch.where(descent, new_slope, -gg), self.slope))
        self.alpha.copy_(torch.where(accept, torch.where(descent, 1.0, steepest_alpha), 0.5 * self.alpha))
        moving = self.active & (self.t < opt.steps)
        for tv, v, d in zip(self.trial, self.variables, self.direction):
            tv.copy_(torch.where(per_scan(moving, v), v + per_scan(self.alpha, v) * d, v))
        self.n_steps.add_(moving.long())
        self.t.add_(1)
