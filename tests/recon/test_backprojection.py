"""Back-projection: the least-squares scale, filters and clipping."""

from __future__ import annotations

import pytest
import torch

from pa_recon.recon import back_projection, least_squares_scale, ramp_filter


def data_misfit(op, x, y) -> torch.Tensor:
    return ((op(x) - y) ** 2).flatten(1).sum(1)


def test_back_projection_correlates_with_a_positive_image(dense_problem):
    # For the unfiltered adjoint ⟨x̂, x⟩ = α ‖A x‖² with α = ‖Aᵀy‖² / ‖AAᵀy‖² > 0, whatever the operator.
    x_hat = back_projection(dense_problem.op, dense_problem.y, filter="none").flatten(1)
    x = dense_problem.x.flatten(1)
    cosine = (x_hat * x).sum(1) / (x_hat.norm(dim=1) * x.norm(dim=1))
    assert torch.all(cosine > 0.5)


@pytest.mark.parametrize("filter", ["none", "ramp"])
@pytest.mark.parametrize("nonneg", [False, True])
def test_scale_is_least_squares_optimal(dense_problem, filter, nonneg):
    op, y = dense_problem.op, dense_problem.y
    x_hat = back_projection(op, y, filter=filter, nonneg=nonneg)
    best = data_misfit(op, x_hat, y)
    for factor in (0.99, 1.01):
        assert torch.all(best <= data_misfit(op, factor * x_hat, y))
    if nonneg:
        assert x_hat.min() >= 0


def test_unfiltered_back_projection_is_the_scaled_adjoint(dense_problem):
    op, y = dense_problem.op, dense_problem.y
    x_hat = back_projection(op, y, filter="none")
    adjoint = op.adjoint(y)
    ratio = x_hat.flatten(1) / adjoint.flatten(1)
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-12, atol=0)


def test_least_squares_scale_recovers_a_known_factor(dense_problem):
    op, x = dense_problem.op, dense_problem.x
    torch.testing.assert_close(least_squares_scale(op, x, 3.0 * op(x)), torch.full((3,), 3.0, dtype=x.dtype))


def test_zero_data_give_a_zero_image(dense_problem):
    x_hat = back_projection(dense_problem.op, torch.zeros_like(dense_problem.y), filter="ramp")
    assert torch.equal(x_hat, torch.zeros_like(dense_problem.x))


def test_ramp_filter_scales_a_sinusoid_by_its_frequency():
    n, f0 = 1024, 0.1
    t = torch.arange(n, dtype=torch.float64)
    filtered = ramp_filter(torch.cos(2 * torch.pi * f0 * t))
    middle = slice(n // 4, 3 * n // 4)
    torch.testing.assert_close(filtered[middle], f0 * torch.cos(2 * torch.pi * f0 * t[middle]), rtol=0, atol=2e-3)
