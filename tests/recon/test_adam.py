"""The batched Adam loop: its step keeps every state tensor in place (what a CUDA-graph replay relies on), and one
step by hand matches the Adam formulas."""

from __future__ import annotations

import torch
from gaussian_prior import gaussian_case

from pa_recon.recon.adam import AdamSettings, _AdamLoop
from pa_recon.recon.descent import Objective, minimise


def loop_of(case, settings: AdamSettings) -> _AdamLoop:
    return _AdamLoop(Objective(case.op, case.y, case.sigma**2, lambda v: v[0], lambda v, image: case.prior.nll(image)),
                     [case.x.clone()], settings)


def test_step_updates_the_state_in_place(dense_op):
    case = gaussian_case(dense_op, [0.05, 0.1])
    loop = loop_of(case, AdamSettings(steps=5, tau=None))
    state = loop.state()
    before = [t.clone() for t in state]
    addresses = [t.data_ptr() for t in state]
    loop.step()
    loop.step()
    # A graph replay writes to the addresses captured once: the step must never rebind a state tensor.
    assert [t.data_ptr() for t in loop.state()] == addresses
    assert all(a is b for a, b in zip(loop.state(), state))
    changed = [not torch.equal(a, b) for a, b in zip(state, before)]
    assert changed[0] and changed[2] and changed[3] and loop.t.item() == 2


def test_first_step_is_the_adam_formula(dense_op):
    case = gaussian_case(dense_op, [0.05, 0.1])
    settings = AdamSettings(steps=10, lr=3e-2, lr_decay=0.5, tau=None)
    loop = loop_of(case, settings)
    x = case.x.clone().requires_grad_()
    r = case.op(x) - case.y
    objective = 0.5 * (r * r).flatten(1).sum(1) / case.sigma**2 + case.prior.nll(x)
    (grad,) = torch.autograd.grad(objective.sum(), x)
    loop.step()
    torch.testing.assert_close(loop.objective, objective.detach(), rtol=1e-12, atol=0)
    # Step 0: the bias-corrected moments are g and g², so Adam moves every pixel by lr · g / (|g| + ε).
    torch.testing.assert_close(loop.variables[0], case.x - 3e-2 * grad / (grad.abs() + 1e-8), rtol=0, atol=1e-12)
    assert torch.equal(loop.n_steps, torch.ones(2, dtype=torch.long))


def test_last_step_only_evaluates(dense_op):
    case = gaussian_case(dense_op, [0.05, 0.1])
    variables, history, stopped, steps = minimise(case.op, case.y, case.sigma, [case.x], lambda v: v[0],
                                                  lambda v, image: case.prior.nll(image),
                                                  AdamSettings(steps=3, tau=None))
    assert history.shape == (4, 2) and stopped == ("max_steps", "max_steps")
    assert torch.equal(steps, torch.full((2,), 3))
    r = case.op(variables[0]) - case.y
    final = 0.5 * (r * r).flatten(1).sum(1) / case.sigma**2 + case.prior.nll(variables[0])
    torch.testing.assert_close(history[-1], final, rtol=1e-12, atol=0)
