"""The batched Adam loop that image-space MAP, latent-space MAP and the posterior's refinement share.

It minimises ``½‖A x − y‖² / σ² + penalty`` per scan, ``x`` a differentiable function of the variables. The data
gradient ``Aᵀ(A x − y) / σ²`` uses the operator's exact adjoint (one forward and one adjoint per step), so the
operator needs no autograd support; only the image map and the penalty are differentiated.

Stopping, per scan: the discrepancy principle stops a scan at the first iterate with ``‖A x − y‖² ≤ τ M σ²``
(``M`` data values per scan); a scan whose objective or gradient turns non-finite is returned at its last finite
iterate ("diverged"); otherwise it runs ``steps`` Adam steps ("max_steps"). Stopped scans are frozen while the
others go on, so every scan's result is the one it would get alone. The loop reads a value back from the device
only every ``check_every`` steps, to end early once all scans have stopped.

One step updates a fixed set of tensors in place and never reads a value back, so on a GPU the whole step (the
flow's forward and backward passes, the operator, Adam) is captured once as a CUDA graph and replayed: at batch 1
a flow prior's step is many small kernels, and launching them one by one from Python can cost more than running
them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pa_recon.errors import PAReconError
from pa_recon.recon.base import LinearOperator, batch_dot, check_count, check_number, per_scan, require

#: Reason codes of a scan's stop, by the integer each scan carries during the loop.
STOP_REASONS = ("max_steps", "discrepancy", "diverged")

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8
_WARMUP_STEPS = 2  # eager steps on a side stream before a capture, as CUDA graphs require


@dataclass(frozen=True)
class AdamSettings:
    """Adam on a per-scan objective: at most ``steps`` steps; the learning rate falls geometrically from ``lr`` to
    ``lr · lr_decay`` over them (Adam with a constant rate hovers around the minimum instead of settling);
    discrepancy factor ``tau`` (``None``: never stop early); a device sync every ``check_every`` steps;
    ``cuda_graph``: on a GPU, replay each step as one captured CUDA graph (same arithmetic, far fewer launches)."""

    steps: int = 500
    lr: float = 1e-2
    lr_decay: float = 0.1
    tau: float | None = 1.0
    check_every: int = 10
    cuda_graph: bool = True

    def __post_init__(self) -> None:
        check_count(self.steps, "steps")
        require(check_number(self.lr, "lr") > 0, "must be positive", "lr")
        require(0 < check_number(self.lr_decay, "lr_decay") <= 1, "must be in (0, 1]", "lr_decay")
        if self.tau is not None:
            check_number(self.tau, "tau")
        check_count(self.check_every, "check_every", minimum=1)
        require(isinstance(self.cuda_graph, bool), f"must be true or false, got {self.cuda_graph!r}", "cuda_graph")


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


class _AdamLoop:
    """The loop's state, every tensor of it updated in place by :meth:`step` (so a CUDA graph can replay it)."""

    def __init__(self, op: LinearOperator, y: torch.Tensor, sigma: torch.Tensor, variables: list[torch.Tensor],
                 image_of: Callable[[list[torch.Tensor]], torch.Tensor],
                 penalty: Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor], opt: AdamSettings) -> None:
        self.op, self.y, self.var2, self.image_of, self.penalty, self.opt = op, y, sigma**2, image_of, penalty, opt
        self.target = None if opt.tau is None else opt.tau * y[0].numel() * self.var2
        n_scans = y.shape[0]
        self.variables = [v.detach().clone() for v in variables]
        self.previous = [v.clone() for v in self.variables]
        self.moment1 = [torch.zeros_like(v) for v in self.variables]
        self.moment2 = [torch.zeros_like(v) for v in self.variables]
        self.active = torch.ones(n_scans, dtype=torch.bool, device=y.device)
        self.reason = torch.zeros(n_scans, dtype=torch.long, device=y.device)
        self.n_steps = torch.zeros(n_scans, dtype=torch.long, device=y.device)
        self.objective = y.new_zeros(n_scans)
        # Float64 on the device, so the step counts and rates need no host value inside a captured step.
        self.t = torch.zeros((), dtype=torch.float64, device=y.device)

    def state(self) -> list[torch.Tensor]:
        """Every tensor :meth:`step` writes."""
        return [*self.variables, *self.previous, *self.moment1, *self.moment2, self.active, self.reason,
                self.n_steps, self.objective, self.t]

    def step(self) -> None:
        """Evaluate the objective and its gradient at the current variables, apply the stopping rules, then take
        one Adam step on the scans still active (none once ``t`` reaches ``steps``)."""
        opt = self.opt
        with torch.enable_grad():
            leaves = [v.detach().requires_grad_() for v in self.variables]
            x = self.image_of(leaves)
            r = self.op(x.detach()) - self.y
            prior_term = self.penalty(leaves, x)
            data_grad = self.op.adjoint(r) / per_scan(self.var2, x)
            # d/dv of (data_grad · x) is the data term's gradient, as data_grad does not depend on v.
            grads = torch.autograd.grad(batch_dot(data_grad, x).sum() + prior_term.sum(), leaves)
        misfit = batch_dot(r, r)
        self.objective.copy_(0.5 * misfit / self.var2 + prior_term.detach())
        finite = torch.isfinite(self.objective)
        for g in grads:
            finite &= torch.isfinite(g).flatten(1).all(1)
        diverged = self.active & ~finite
        self.reason.copy_(torch.where(diverged, STOP_REASONS.index("diverged"), self.reason))
        for v, p in zip(self.variables, self.previous):
            v.copy_(torch.where(per_scan(diverged, v), p, v))
        self.n_steps.sub_(diverged.long()).clamp_min_(0)
        self.active &= finite
        if self.target is not None:
            fits = self.active & (misfit <= self.target)
            self.reason.copy_(torch.where(fits, STOP_REASONS.index("discrepancy"), self.reason))
            self.active &= ~fits
        moving = self.active & (self.t < opt.steps)
        lr = opt.lr * opt.lr_decay ** (self.t / max(opt.steps - 1, 1))
        bias1, bias2 = 1 - _BETA1 ** (self.t + 1), 1 - _BETA2 ** (self.t + 1)
        for v, p, m1, m2, g in zip(self.variables, self.previous, self.moment1, self.moment2, grads):
            p.copy_(v)
            m1.mul_(_BETA1).add_(g, alpha=1 - _BETA1)
            m2.mul_(_BETA2).addcmul_(g, g, value=1 - _BETA2)
            v.copy_(torch.where(per_scan(moving, v), v - lr * (m1 / bias1) / (torch.sqrt(m2 / bias2) + _EPS), v))
        self.n_steps.add_(moving.long())
        self.t.add_(1)


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
    image_of: Callable[[list[torch.Tensor]], torch.Tensor],
    penalty: Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor],
    opt: AdamSettings,
) -> tuple[list[torch.Tensor], torch.Tensor, tuple[str, ...], torch.Tensor]:
    """Minimise ``½‖A x − y‖²/σ² + penalty(v, x)``, ``x = image_of(v)``, over ``variables`` by batched Adam.

    ``variables``: tensors ``(B, ...)`` (not modified); ``image_of`` maps them to images ``(B, *op.image_shape)``
    and ``penalty`` to per-scan nats ``(B,)``, both differentiably and without reading values back to the host.
    Stops as in the module notes. Returns the final variables, the history ``(n_done + 1, B)`` of the objective
    (nats) at the start and after each step, the stop reason per scan and the steps per scan ``(B,)``.
    """
    loop = _AdamLoop(op, y, sigma, variables, image_of, penalty, opt)
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
