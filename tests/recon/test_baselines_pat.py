"""The three baselines on a tiny limited-view PAT problem (16 × 16 grid, 16 elements, 64 samples)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pa_recon.metrics import relative_error
from pa_recon.physics.geometry import Grid, LinearArray
from pa_recon.physics.operator import PATOperator
from pa_recon.recon import LinearOperator, back_projection, cgls, operator_norm, tv_reconstruction


@pytest.fixture(scope="module")
def pat_problem() -> tuple[PATOperator, torch.Tensor, torch.Tensor]:
    """A disk of radius 4 px in the 16 × 16 grid, data with 1 % Gaussian noise (float32)."""
    dx = 1e-4
    grid = Grid(nx=16, nz=16, dx=dx)
    array = LinearArray.uniform(16, pitch=dx, fs=1500.0 / dx, n_samples=64)
    op = PATOperator(grid, array)
    z, x = np.meshgrid(grid.z(), grid.x(), indexing="ij")
    disk = ((z - 8 * dx) ** 2 + (x - dx) ** 2 < (4 * dx) ** 2).astype(np.float32)
    p0 = torch.from_numpy(disk)[None, None]
    clean = op(p0)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    return op, p0, clean + 0.01 * clean.abs().max() * noise


def test_baselines_beat_zero_and_iterative_ones_beat_the_adjoint(pat_problem):
    op, p0, y = pat_problem
    assert isinstance(op, LinearOperator)
    norm = operator_norm(op)
    errors = {
        "adjoint": relative_error(back_projection(op, y, filter="none"), p0)[0],
        "ramp": relative_error(back_projection(op, y, filter="ramp", nonneg=True), p0)[0],
        "cgls": relative_error(cgls(op, y, lam=1e-3 * norm**2, n_iter=50).image, p0)[0],
        "tv": relative_error(tv_reconstruction(op, y, lam=1e-2 * norm**2, n_iter=200, op_norm=norm).image, p0)[0],
    }
    assert all(e < 1 for e in errors.values()), errors
    assert errors["cgls"] < errors["adjoint"] and errors["tv"] < errors["adjoint"], errors
    assert errors["tv"] < 0.2, errors
