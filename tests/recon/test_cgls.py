"""CGLS against the closed-form Tikhonov solution on a small dense problem (float64)."""

from __future__ import annotations

import pytest
import torch

from pa_recon.recon import cgls


def closed_form(op, y: torch.Tensor, lam: float) -> torch.Tensor:
    m = op.matrix
    normal = m.T @ m + lam * torch.eye(m.shape[1], dtype=m.dtype)
    return torch.linalg.solve(normal, m.T @ y.flatten(1).T).T.reshape(y.shape[0], *op.image_shape)


@pytest.mark.parametrize("lam", [0.0, 0.05, 2.0])
def test_cgls_matches_closed_form(dense_problem, lam):
    op, y = dense_problem.op, dense_problem.y + 0.05 * torch.randn_like(dense_problem.y)
    result = cgls(op, y, lam=lam, n_iter=100, tol=1e-12)
    torch.testing.assert_close(result.image, closed_form(op, y, lam), rtol=0, atol=1e-6)


def test_cgls_recovers_noiseless_solution_without_regularisation(dense_problem):
    result = cgls(dense_problem.op, dense_problem.y, lam=0.0, n_iter=100, tol=1e-12)
    torch.testing.assert_close(result.image, dense_problem.x, rtol=0, atol=1e-8)


@pytest.mark.parametrize("warm", [False, True])
def test_damped_residual_history_never_increases(dense_problem, warm):
    y = dense_problem.y + 0.1 * torch.randn_like(dense_problem.y)
    x0 = torch.ones_like(dense_problem.x) if warm else None
    history = cgls(dense_problem.op, y, lam=0.3, n_iter=30, tol=0.0, x0=x0).history
    assert history.shape[1] == 3 and history.shape[0] > 5
    assert torch.all(history[1:] <= history[:-1] * (1 + 1e-12))


def test_each_scan_stops_on_its_own_tolerance(dense_problem):
    y = dense_problem.y.clone()
    y[1] = 0.0
    result = cgls(dense_problem.op, y, lam=0.01, n_iter=100, tol=1e-3)
    assert result.history.shape[0] < 101
    assert torch.all(result.image[1] == 0)
    for b in (0, 2):
        alone = cgls(dense_problem.op, y[b:b + 1], lam=0.01, n_iter=100, tol=1e-3)
        torch.testing.assert_close(result.image[b:b + 1], alone.image, rtol=0, atol=1e-12)


def test_warm_start_at_the_solution_stops_at_once(dense_problem):
    op, y = dense_problem.op, dense_problem.y
    x0 = closed_form(op, y, 0.1)
    x0_before = x0.clone()
    result = cgls(op, y, lam=0.1, n_iter=50, tol=1e-8, x0=x0)
    assert result.history.shape[0] == 1
    assert torch.equal(result.image, x0) and result.image is not x0
    assert torch.equal(x0, x0_before)
