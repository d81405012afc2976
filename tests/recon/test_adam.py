"""The batched Adam loop: one step by hand matches the Adam formulas, and the last step only evaluates."""

from __future__ import annotations

import torch
from gaussian_prior import gaussian_case

from pa_recon.recon.adam import AdamSettings, _AdamLoop
from pa_recon.recon.descent import minimise


def test_first_step_is_the_adam_formula(dense_op):
    case = gaussian_case(dense_op, [0.05, 0.1])
    settings = AdamSettings(steps=10, lr=3e-2, lr_decay=0.5, tau=None)
    loop = _AdamLoop(case.descent_objective(), [case.x.clone()], settings)
    x = case.x.clone().requires_grad_()
    objective = case.objective(x)
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
    torch.testing.assert_close(history[-1], case.objective(variables[0]), rtol=1e-12, atol=0)
