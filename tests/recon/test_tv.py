"""TV-regularised least squares (PDHG): discrete gradient, objective, constraints and limiting cases."""

from __future__ import annotations

import torch

from pa_recon.recon import gradient, gradient_adjoint, operator_norm, total_variation, tv_reconstruction


def test_gradient_adjoint_is_exact():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 1, 5, 7, generator=g, dtype=torch.float64)
    v = torch.randn(2, 2, 1, 5, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close((gradient(x) * v).sum(), (x * gradient_adjoint(v)).sum(), rtol=1e-12, atol=0)


def test_total_variation_of_simple_images():
    step = torch.zeros(1, 1, 6, 8, dtype=torch.float64)
    step[..., 3:] = 2.5
    diagonal = torch.tensor([[[[0.0, 1.0], [1.0, 2.0]]]], dtype=torch.float64)
    assert total_variation(step).item() == 2.5 * 6
    assert total_variation(torch.full((1, 1, 4, 4), 3.0)).item() == 0.0
    # Pixel (0, 0) has differences (1, 1); the others have one difference each, the last row/column none.
    assert total_variation(diagonal).item() == 2**0.5 + 1 + 1


def test_objective_decreases_and_output_is_nonnegative(dense_problem):
    op = dense_problem.op
    y = op(dense_problem.x - 1.0)
    result = tv_reconstruction(op, y, lam=0.02, n_iter=300, nonneg=True)
    history = result.history
    assert history.shape == (301, 3)
    assert torch.all(history[-1] < 0.7 * history[0])
    assert torch.all(history[-1] <= history.min(dim=0).values * (1 + 1e-9))
    assert result.image.min() >= 0
    assert tv_reconstruction(op, y, lam=0.02, n_iter=300, nonneg=False).image.min() < 0


def test_vanishing_lam_approaches_least_squares(dense_problem):
    op, y = dense_problem.op, dense_problem.y + 0.05 * torch.randn_like(dense_problem.y)
    lstsq = torch.linalg.lstsq(op.matrix, y.flatten(1).T).solution.T.reshape(dense_problem.x.shape)
    result = tv_reconstruction(op, y, lam=1e-9, n_iter=300, nonneg=False)
    torch.testing.assert_close(result.image, lstsq, rtol=0, atol=1e-6)


def test_huge_lam_gives_the_best_constant_image(dense_problem):
    op, y = dense_problem.op, dense_problem.y
    ones = torch.ones_like(dense_problem.x[:1])
    a1 = op(ones)
    best = (y * a1).flatten(1).sum(1) / (a1 * a1).sum()
    result = tv_reconstruction(op, y, lam=1e3, n_iter=2000, nonneg=False)
    torch.testing.assert_close(result.image, best.reshape(-1, 1, 1, 1) * ones, rtol=0, atol=1e-6)


def test_scans_are_solved_independently_and_inputs_kept(dense_problem):
    op, y, x0 = dense_problem.op, dense_problem.y, dense_problem.x * 0.5
    y_before, x0_before = y.clone(), x0.clone()
    norm = operator_norm(op, dtype=torch.float64)
    batch = tv_reconstruction(op, y, lam=0.05, n_iter=50, op_norm=norm, x0=x0)
    alone = tv_reconstruction(op, y[1:2], lam=0.05, n_iter=50, op_norm=norm, x0=x0[1:2])
    torch.testing.assert_close(batch.image[1:2], alone.image, rtol=0, atol=1e-12)
    assert torch.equal(y, y_before) and torch.equal(x0, x0_before)
