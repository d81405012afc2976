"""Batched L-BFGS: the closed-form MAP in few evaluations, per-scan independence, its first step and the line search
(halving, stalling, non-finite trials)."""

from __future__ import annotations

import pytest
import torch
from gaussian_prior import gaussian_case, gaussian_posterior

from pa_recon.recon import LBFGSSettings, chi_square, map_image, map_latent
from pa_recon.recon.descent import Objective, minimise
from pa_recon.recon.lbfgs import MAX_HALVINGS, _LBFGSLoop


@pytest.mark.parametrize("lam", [1.0, 3.0])
def test_image_map_reaches_the_closed_form_in_few_evaluations(dense_op, lam):
    case = gaussian_case(dense_op, [0.05, 0.1, 0.2])
    result = map_image(case.op, case.y, case.sigma, case.prior, lam=lam, settings=LBFGSSettings(steps=60, tau=None))
    expected, _ = gaussian_posterior(case.op.matrix, case.y, case.sigma, case.mean, case.cov / lam)
    torch.testing.assert_close(result.image.flatten(1), expected, rtol=0, atol=1e-7)
    # The history is the objective at the accepted points: it never rises.
    assert torch.all(result.history[1:] <= result.history[:-1])
    assert result.stopped == ("max_steps",) * 3 and torch.equal(result.steps, torch.full((3,), 60))


def test_latent_map_with_several_latents_reaches_the_closed_form(dense_op):
    case = gaussian_case(dense_op, [0.05, 0.1, 0.2])
    result = map_latent(case.op, case.y, case.sigma, case.prior, settings=LBFGSSettings(steps=80, lr=5e-2, tau=None))
    torch.testing.assert_close(result.image.flatten(1), case.post_mean, rtol=0, atol=1e-7)


def test_each_scan_gets_what_it_would_get_alone(dense_op):
    case = gaussian_case(dense_op, [1.0, 0.1, 0.01], noise=0.1)
    settings = LBFGSSettings(steps=25, memory=4, tau=1.0, check_every=3)
    batch = map_image(case.op, case.y, case.sigma, case.prior, x0="backprojection", settings=settings)
    assert batch.stopped[0] == "discrepancy" and batch.steps[0] == 0
    assert batch.stopped[2] == "max_steps" and chi_square(case.op, batch.image, case.y, case.sigma)[2] > 1
    for b in range(3):
        solo = map_image(case.op, case.y[b:b + 1], case.sigma[b:b + 1], case.prior, x0="backprojection",
                         settings=settings)
        torch.testing.assert_close(solo.image, batch.image[b:b + 1], rtol=0, atol=1e-12)
        assert solo.stopped[0] == batch.stopped[b] and solo.steps[0] == batch.steps[b]


def test_first_trial_is_a_steepest_descent_step_of_rms_size_lr(dense_op):
    case = gaussian_case(dense_op, [0.05, 0.1])
    loop = _LBFGSLoop(case.descent_objective(), [case.x.clone()], LBFGSSettings(steps=5, lr=0.03, tau=None))
    loop.step()
    x = case.x.clone().requires_grad_()
    objective = case.objective(x)
    (grad,) = torch.autograd.grad(objective.sum(), x)
    rms = grad.pow(2).flatten(1).mean(1).sqrt()
    torch.testing.assert_close(loop.trial[0], case.x - 0.03 * grad / rms[:, None, None, None], rtol=0, atol=1e-12)
    torch.testing.assert_close(loop.objective, objective.detach(), rtol=1e-12, atol=0)


class _WrongGradient(torch.autograd.Function):
    """``½‖x‖²`` per scan with the gradient's sign flipped: no trial along the returned direction decreases it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 0.5 * x.pow(2).flatten(1).sum(1)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return -grad_output[:, None, None, None] * x


def test_a_scan_without_a_decrease_stalls_at_its_start(dense_op):
    case = gaussian_case(dense_op, [0.1])
    # The image is 0 and so are the data: the objective is the penalty alone.
    variables, history, stopped, steps = minimise(case.op, torch.zeros_like(case.y), case.sigma, [case.x],
                                                  lambda v: v[0] * 0, lambda v, image: _WrongGradient.apply(v[0]),
                                                  LBFGSSettings(steps=100, tau=None))
    assert stopped == ("stalled",) and int(steps[0]) == MAX_HALVINGS
    assert torch.equal(variables[0], case.x) and torch.all(history == history[0])
    # Each rejected trial halves the step along the same direction.
    loop = _LBFGSLoop(Objective(case.op, torch.zeros_like(case.y), case.sigma**2, lambda v: v[0] * 0,
                                lambda v, image: _WrongGradient.apply(v[0])), [case.x], LBFGSSettings(tau=None))
    moves = []
    for _ in range(3):
        loop.step()
        moves.append(loop.trial[0] - case.x)
    torch.testing.assert_close(moves[1], 0.5 * moves[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(moves[2], 0.25 * moves[0], rtol=1e-12, atol=0)


def test_a_non_finite_trial_is_halved_not_a_divergence(dense_op):
    case = gaussian_case(dense_op, [0.1])
    limit = 1.0

    def bounded(v, image):
        value = case.prior.nll(image)
        return torch.where(image.flatten(1).max(1).values > limit, torch.inf, value)

    start = torch.full_like(case.x, 0.5)
    variables, history, stopped, _ = minimise(case.op, case.op(torch.full_like(case.x, 3.0)), case.sigma, [start],
                                              lambda v: v[0], bounded, LBFGSSettings(steps=40, lr=1.0, tau=None))
    assert stopped != ("diverged",) and bool(torch.isfinite(history).all())
    assert float(variables[0].max()) <= limit and history[-1, 0] < history[0, 0]


def test_a_non_finite_start_diverges_at_once(dense_op):
    case = gaussian_case(dense_op, [0.1, 0.1])
    start = case.x.clone()
    start[0, 0, 0, 0] = torch.nan
    variables, history, stopped, steps = minimise(case.op, case.y, case.sigma, [start], lambda v: v[0],
                                                  lambda v, image: case.prior.nll(image),
                                                  LBFGSSettings(steps=5, tau=None))
    assert stopped == ("diverged", "max_steps") and int(steps[0]) == 0
    assert not torch.isfinite(history[0, 0]) and torch.isfinite(history[:, 1]).all()
