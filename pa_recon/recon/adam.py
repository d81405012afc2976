"""Adam as the step rule of the batched descent (:mod:`pa_recon.recon.descent`, which holds the stopping rules)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pa_recon.checks import check_number
from pa_recon.recon.base import per_scan
from pa_recon.recon.descent import LoopState, Objective, StepSettings

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


@dataclass(frozen=True)
class AdamSettings(StepSettings):
    """Adam on a per-scan objective (fields of :class:`~pa_recon.recon.descent.StepSettings`); the learning rate
    falls geometrically from ``lr`` to ``lr · lr_decay`` over the ``steps`` (Adam with a constant rate hovers around
    the minimum instead of settling)."""

    lr_decay: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "lr_decay", check_number(self.lr_decay, "lr_decay", above=0, maximum=1))

    def loop(self, objective: Objective, variables: list[torch.Tensor]) -> _AdamLoop:
        """The loop state of these settings for ``objective`` from ``variables`` (copied)."""
        return _AdamLoop(objective, variables, self)


class _AdamLoop(LoopState):
    """The loop's state, every tensor of it updated in place by :meth:`step` (so a CUDA graph can replay it)."""

    def __init__(self, objective: Objective, variables: list[torch.Tensor], opt: AdamSettings) -> None:
        super().__init__(objective, variables, opt)
        self.opt: AdamSettings = opt
        self.previous = [v.clone() for v in self.variables]
        self.moment1 = [torch.zeros_like(v) for v in self.variables]
        self.moment2 = [torch.zeros_like(v) for v in self.variables]

    def state(self) -> list[torch.Tensor]:
        """Every tensor :meth:`step` writes."""
        return [*self.variables, *self.previous, *self.moment1, *self.moment2, *self.bookkeeping()]

    def step(self) -> None:
        """Evaluate the objective and its gradient at the current variables, apply the stopping rules, then take
        one Adam step on the scans still active (none once ``t`` reaches ``steps``)."""
        opt = self.opt
        e = self.f(self.variables)
        self.objective.copy_(e.objective)
        diverged = self.active & ~e.finite
        self.stop(diverged, "diverged")
        for v, p in zip(self.variables, self.previous):
            v.copy_(torch.where(per_scan(diverged, v), p, v))
        self.n_steps.sub_(diverged.long()).clamp_min_(0)
        if self.target is not None:
            self.stop(self.active & (e.misfit <= self.target), "discrepancy")
        moving = self.active & (self.t < opt.steps)
        lr = opt.lr * opt.lr_decay ** (self.t / max(opt.steps - 1, 1))
        bias1, bias2 = 1 - _BETA1 ** (self.t + 1), 1 - _BETA2 ** (self.t + 1)
        for v, p, m1, m2, g in zip(self.variables, self.previous, self.moment1, self.moment2, e.grads):
            p.copy_(v)
            m1.mul_(_BETA1).add_(g, alpha=1 - _BETA1)
            m2.mul_(_BETA2).addcmul_(g, g, value=1 - _BETA2)
            v.copy_(torch.where(per_scan(moving, v), v - lr * (m1 / bias1) / (torch.sqrt(m2 / bias2) + _EPS), v))
        self.n_steps.add_(moving.long())
        self.t.add_(1)
