"""Operator protocol, operator norm, lam helper and input validation shared by all baselines."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from pa_recon.errors import PAReconError
from pa_recon.recon import (
    LinearOperator,
    back_projection,
    cgls,
    lam_from_fraction,
    operator_norm,
    tv_reconstruction,
)

ALGORITHMS: dict[str, Callable[..., object]] = {
    "back_projection": lambda op, y, **kw: back_projection(op, y, **kw),
    "cgls": lambda op, y, **kw: cgls(op, y, lam=0.1, n_iter=5, **kw),
    "tv": lambda op, y, **kw: tv_reconstruction(op, y, lam=0.1, n_iter=5, **kw),
}


def test_linear_operator_protocol_needs_the_adjoint_and_both_shapes(dense_op):
    assert isinstance(dense_op, LinearOperator)
    assert not isinstance(lambda x: x, LinearOperator)
    assert not isinstance(torch.nn.Identity(), LinearOperator)


def test_operator_norm_matches_largest_singular_value(dense_op):
    exact = torch.linalg.matrix_norm(dense_op.matrix, ord=2).item()
    estimate = operator_norm(dense_op, n_iter=300, dtype=torch.float64)
    assert estimate == pytest.approx(exact, rel=1e-5)
    assert operator_norm(dense_op, n_iter=3, dtype=torch.float64) <= exact * (1 + 1e-12)


def test_operator_norm_is_reproducible_and_takes_an_explicit_shape(dense_op):
    a = operator_norm(dense_op, n_iter=10, dtype=torch.float64)
    assert operator_norm(dense_op, (1, 4, 5), n_iter=10, dtype=torch.float64) == a


def test_operator_norm_of_zero_operator_is_zero(dense_op):
    dense_op.matrix = torch.zeros_like(dense_op.matrix)
    assert operator_norm(dense_op, dtype=torch.float64) == 0.0


def test_lam_from_fraction_scales_the_squared_norm(dense_op):
    norm = operator_norm(dense_op, n_iter=50, dtype=torch.float64)
    assert lam_from_fraction(dense_op, 0.01, dtype=torch.float64) == pytest.approx(0.01 * norm**2, rel=1e-12)
    with pytest.raises(PAReconError):
        lam_from_fraction(dense_op, -1.0, dtype=torch.float64)


@pytest.mark.parametrize("name", ALGORITHMS)
@pytest.mark.parametrize(
    "bad",
    [
        lambda y: y.numpy(),
        lambda y: y[:, :-1],
        lambda y: y[0],
        lambda y: y.to(torch.int64),
        lambda y: torch.where(torch.arange(y.shape[-1]) == 3, torch.nan, y),
        lambda y: torch.where(torch.arange(y.shape[-1]) == 3, torch.inf, y),
    ],
    ids=["numpy", "shape", "no-batch", "integer", "nan", "inf"],
)
def test_bad_data_raise_user_errors(dense_problem, name, bad):
    with pytest.raises(PAReconError) as info:
        ALGORITHMS[name](dense_problem.op, bad(dense_problem.y))
    assert info.value.field == "y"


@pytest.mark.parametrize("name", ["cgls", "tv"])
@pytest.mark.parametrize(
    "bad", [lambda x: x[:, :, :-1], lambda x: x[:1], lambda x: x * torch.nan], ids=["shape", "batch", "nan"]
)
def test_bad_start_raises_user_error(dense_problem, name, bad):
    with pytest.raises(PAReconError) as info:
        ALGORITHMS[name](dense_problem.op, dense_problem.y, x0=bad(dense_problem.x))
    assert info.value.field == "x0"


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda op, y: cgls(op, y, lam=-1.0), "lam"),
        (lambda op, y: cgls(op, y, lam=0.1, n_iter=-1), "n_iter"),
        (lambda op, y: cgls(op, y, lam=0.1, n_iter=2.5), "n_iter"),
        (lambda op, y: tv_reconstruction(op, y, lam=0.1, n_iter=2.5), "n_iter"),
        (lambda op, y: cgls(op, y, lam=0.1, tol=float("nan")), "tol"),
        (lambda op, y: tv_reconstruction(op, y, lam=float("inf")), "lam"),
        (lambda op, y: tv_reconstruction(op, y, lam=0.1, step=0.0), "step"),
        (lambda op, y: tv_reconstruction(op, y, lam=0.1, op_norm=0.0), "op_norm"),
        (lambda op, y: back_projection(op, y, filter="hann"), "filter"),
    ],
)
def test_bad_parameters_raise_user_errors(dense_problem, call, field):
    with pytest.raises(PAReconError) as info:
        call(dense_problem.op, dense_problem.y)
    assert info.value.field == field


@pytest.mark.parametrize("name", ALGORITHMS)
def test_inputs_are_not_mutated_and_outputs_follow_the_data(dense_problem, name):
    y = dense_problem.y.to(torch.float32)
    dense_problem.op.matrix = dense_problem.op.matrix.to(torch.float32)
    y_before = y.clone()
    out = ALGORITHMS[name](dense_problem.op, y)
    image = out if isinstance(out, torch.Tensor) else out.image
    assert torch.equal(y, y_before)
    assert image.dtype == torch.float32 and image.shape == (3, *dense_problem.op.image_shape)
    assert np.isfinite(image.numpy()).all()
