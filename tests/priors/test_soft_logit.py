"""The soft logit: a smooth, increasing bijection of the real line that is the plain logit on the data range."""

from __future__ import annotations

import pytest
import torch

from pa_recon.errors import PAReconError
from pa_recon.flows import LogitTransform
from pa_recon.priors import SoftLogit


def _line(low: float, high: float, n: int = 4001, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.linspace(low, high, n, dtype=dtype).view(1, 1, 1, n)


def test_is_the_plain_logit_on_the_identity_range():
    t = SoftLogit(0.05)
    x = _line(*t.identity_range)
    y, logdet = t(x)
    y_ref, logdet_ref = LogitTransform(0.05)(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(logdet, logdet_ref, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_inverse_is_exact_and_increasing_far_outside_the_data_range(dtype, tol):
    t = SoftLogit(0.1)
    x = _line(-30.0, 31.0, dtype=dtype)
    y, logdet = t(x)
    assert torch.isfinite(y).all() and (y.diff(dim=-1) > 0).all()
    x_back, logdet_inv = t.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=tol, atol=tol)
    torch.testing.assert_close(logdet_inv, -logdet)


def test_logdet_is_the_log_derivative_and_odd_symmetry_holds():
    t = SoftLogit(0.05)
    x = _line(-2.0, 3.0, 501).reshape(501, 1, 1, 1).requires_grad_()
    y, logdet = t(x)
    (slope,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(logdet, slope.log().flatten(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(t(1.0 - x.detach())[0], -y.detach(), rtol=0, atol=1e-12)


def test_log_derivative_is_continuous_at_the_knots():
    t = SoftLogit(0.05)
    lo, hi = t.identity_range
    for knot in (lo, hi):
        _, inside = t(torch.full((1, 1, 1, 1), knot + (1e-9 if knot == lo else -1e-9), dtype=torch.float64))
        _, outside = t(torch.full((1, 1, 1, 1), knot - (1e-9 if knot == lo else -1e-9), dtype=torch.float64))
        assert abs(float(inside - outside)) < 1e-6


@pytest.mark.parametrize("alpha", [0.0, 0.5, -0.1])
def test_rejects_an_alpha_outside_the_open_interval(alpha):
    with pytest.raises(PAReconError, match="alpha"):
        SoftLogit(alpha)
