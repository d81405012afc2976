"""The batched descent that image-space MAP, latent-space MAP and the posterior's refinement share.

It minimises ``½‖A x − y‖² / σ² + penalty`` per scan, ``x`` a differentiable function of the variables, by a step
rule given in its settings: Adam (:mod:`pa_recon.recon.adam`) or L-BFGS (:mod:`pa_recon.recon.lbfgs`). The data
gradient ``Aᵀ(A x − y) / σ²`` uses the operator's exact adjoint (one forward and one adjoint per evaluation), so
the operator needs no autograd support; only the image map and the penalty are differentiated.

Stopping, per scan: the discrepancy principle stops a scan at the first iterate with ``‖A x − y‖² ≤ τ M σ²``
(``M`` data values per scan); a scan whose objective or gradient turns non-finite is returned at its last finite
iterate ("diverged"); L-BFGS stops a scan whose line search finds no decrease ("stalled"); otherwise it runs
``steps`` steps ("max_steps"). Stopped scans are frozen while the others go on, so every scan's result is the one
it would get alone. The loop reads a value back from the device only every ``check_every`` steps, to end early
once all scans have stopped.

One step evaluates the objective once, updates a fixed set of tensors in place and never reads a value back, so on
a GPU the whole step (the flow's forward and backward passes, the operator, the update) is captured once as a CUDA
graph and replayed: at batch 1 a flow prior's step is many small kernels, and launching them one by one from
Python can cost more than running them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from pa_recon.errors import PAReconError
from pa_recon.checks import check_count, check_number
from pa_recon.recon.base import LinearOperator, batch_dot, per_scan, require

#: Reason codes of a scan's stop, by the integer each scan carries during the loop.
STOP_REASONS = ("max_steps", "discrepancy", "diverged", "stalled")

_WARMUP_STEPS = 2  # eager steps on a side stream before a capture, as CUDA graphs require

ImageOf = Callable[[list[torch.Tensor]], torch.Tensor]
Penalty = Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor]


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


class Evaluation(NamedTuple):
    """The objective at one point: per scan ``(B,)`` its value (nats), the squared misfit ``‖A x − y‖²`` and
    whether value and gradient are finite; the gradients, one per variable."""

    objective: torch.Tensor
    misfit: torch.Tensor
    finite: torch.Tensor
    grads: list[torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """``½‖A x − y‖² / σ² + penalty(v, x)`` per scan, ``x = image_of(v)``; ``var2`` is ``σ²`` ``(B,)``. The
    discrepancy stop of factor ``tau`` (``None``: never) is ``‖A x − y‖² ≤ target``."""

    op: LinearOperator
    y: torch.Tensor
    var2: torch.Tensor
    image_of: ImageOf
    penalty: Penalty

    def target(self, tau: float | None) -> torch.Tensor | None:
        """The misfit ``τ M σ²`` ``(B,)`` at which the discrepancy principle stops a scan."""
        return None if tau is None else tau * self.y[0].numel() * self.var2

    def __call__(self, variables: list[torch.Tensor]) -> Evaluation:
        """Value and gradient at ``variables`` (tensors ``(B, ...)``, not modified)."""
        with torch.enable_grad():
            leaves = [v.detach().requires_grad_() for v in variables]
            x = self.image_of(leaves)
            r = self.op(x.detach()) - self.y
            prior_term = self.penalty(leaves, x)
            data_grad = self.op.adjoint(r) / per_scan(self.var2, x)
            # d/dv of (data_grad · x) is the data term's gradient, as data_grad does not depend on v.
            grads = torch.autograd.grad(batch_dot(data_grad, x).sum() + prior_term.sum(), leaves)
        misfit = batch_dot(r, r)
        objective = 0.5 * misfit / self.var2 + prior_term.detach()
        finite = torch.isfinite(objective)
        for g in grads:
            finite &= torch.isfinite(g).flatten(1).all(1)
        return Evaluation(objective, misfit, finite, list(grads))


@dataclass(frozen=True)
class StepSettings:
    """What every step rule's settings hold: at most ``steps`` steps (objective evaluations); ``lr`` the step rule's
    rate; discrepancy factor ``tau`` (``None``: never stop early); a device sync every ``check_every`` steps;
    ``cuda_graph``: on a GPU, replay each step as one captured CUDA graph (same arithmetic, far fewer launches)."""

    steps: int = 500
    lr: float = 1e-2
    tau: float | None = 1.0
    check_every: int = 10
    cuda_graph: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", check_count(self.steps, "steps"))
        object.__setattr__(self, "lr", check_number(self.lr, "lr", above=0))
        if self.tau is not None:
            object.__setattr__(self, "tau", check_number(self.tau, "tau", minimum=0))
        object.__setattr__(self, "check_every", check_count(self.check_every, "check_every", minimum=1))
        require(isinstance(self.cuda_graph, bool), f"must be true or false, got {self.cuda_graph!r}", "cuda_graph")

    def loop(self, objective: Objective, variables: list[torch.Tensor]) -> LoopState:
        """The step rule's loop state for ``objective`` from ``variables`` (copied); each step rule defines it."""
        raise NotImplementedError


class LoopState:
    """The state every step rule's loop keeps, on the data's device: the variables (a copy of the start), per scan
    whether it is still active, why it stopped, its steps and its objective; and the step count ``t`` (float64 on
    the device, so the step counts and rates need no host value inside a captured step)."""

    def __init__(self, objective: Objective, variables: list[torch.Tensor], opt: StepSettings) -> None:
        self.f, self.opt = objective, opt
        self.target = objective.target(opt.tau)
        y = objective.y
        self.variables = [v.detach().clone() for v in variables]
        self.active = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
        self.reason = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)
        self.n_steps = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)
        self.objective = y.new_zeros(y.shape[0])
        self.t = torch.zeros((), dtype=torch.float64, device=y.device)

    def bookkeeping(self) -> list[torch.Tensor]:
        """The tensors of this class that a step writes (besides the variables)."""
        return [self.active, self.reason, self.n_steps, self.objective, self.t]

    def stop(self, mask: torch.Tensor, reason: str) -> None:
        """Stop the scans of ``mask`` ``(B,)`` for ``reason`` (one of :data:`STOP_REASONS`), in place."""
        self.reason.copy_(torch.where(mask, STOP_REASONS.index(reason), self.reason))
        self.active &= ~mask

    def state(self) -> list[torch.Tensor]:
        """Every tensor :meth:`step` writes; each step rule defines it."""
        raise NotImplementedError

    def step(self) -> None:
        """Evaluate the objective once, apply the stopping rules and move the active scans, updating every tensor of
        :meth:`state` in place and reading nothing back from the device; each step rule defines it."""
        raise NotImplementedError


def graphed(step: Callable[[], None], state: list[torch.Tensor]) -> Callable[[], None]:
    """``step`` captured as a CUDA graph, returned as its replay. ``step`` must update ``state`` (CUDA tensors) in
    place and read nothing back from the device. The warm-up steps that capturing needs are undone; if the capture
    fails, a warning says why and ``step`` itself is returned."""
    saved = [s.clone() for s in state]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.stream(side):
            for _ in range(_WARMUP_STEPS):
                step()
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            step()
    except RuntimeError as error:
        warnings.warn(f"CUDA graph capture failed, running the steps one by one: {error}", RuntimeWarning,
                      stacklevel=2)
        torch.cuda.synchronize()
        graph = None
    for s, v in zip(state, saved):
        s.copy_(v)
    return step if graph is None else graph.replay


def minimise(
    op: LinearOperator,
    y: torch.Tensor,
    sigma: torch.Tensor,
    variables: list[torch.Tensor],
    image_of: ImageOf,
    penalty: Penalty,
    opt: StepSettings,
) -> tuple[list[torch.Tensor], torch.Tensor, tuple[str, ...], torch.Tensor]:
    """Minimise ``½‖A x − y‖²/σ² + penalty(v, x)``, ``x = image_of(v)``, over ``variables`` by the step rule of
    ``opt`` (Adam or L-BFGS settings), batched over scans.

    ``variables``: tensors ``(B, ...)`` (not modified); ``image_of`` maps them to images ``(B, *op.image_shape)``
    and ``penalty`` to per-scan nats ``(B,)``, both differentiably and without reading values back to the host.
    Stops as in the module notes. Returns the final variables, the history ``(n_done + 1, B)`` of the objective
    (nats) at the start and after each step, the stop reason per scan and the steps per scan ``(B,)``.
    """
    loop = opt.loop(Objective(op, y, sigma**2, image_of, penalty), variables)
    step = graphed(loop.step, loop.state()) if opt.cuda_graph and y.is_cuda else loop.step
    history = y.new_empty(opt.steps + 1, y.shape[0])
    done = 0
    for t in range(opt.steps + 1):
        step()
        history[t] = loop.objective
        done = t
        if t == opt.steps or (t % opt.check_every == 0 and not bool(loop.active.any())):
            break
    names = tuple(STOP_REASONS[int(code)] for code in loop.reason.tolist())
    return loop.variables, history[: done + 1], names, loop.n_steps
