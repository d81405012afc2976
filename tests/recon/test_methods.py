import pytest
import torch

from pa_recon.errors import PAReconError
from pa_recon.recon import (
    Problem,
    back_projection,
    cgls,
    method_settings,
    needs_prior,
    operator_norm,
    reconstruct,
    tv_reconstruction,
)


def test_named_methods_equal_the_direct_calls(dense_problem):
    op, y = dense_problem.op, dense_problem.y
    norm = operator_norm(op, dtype=torch.float64)
    lam = 0.01 * norm**2
    expected = {
        "bp": back_projection(op, y, filter="ramp", nonneg=False),
        "cgls": cgls(op, y, lam=lam, n_iter=7, tol=0.0).image,
        "tv": tv_reconstruction(op, y, lam=lam, n_iter=9, nonneg=False, op_norm=norm).image,
    }
    settings = {
        "bp": {"filter": "ramp", "nonneg": False},
        "cgls": {"lam_fraction": 0.01, "n_iter": 7, "tol": 0.0},
        "tv": {"lam_fraction": 0.01, "n_iter": 9, "nonneg": False},
    }
    problem = Problem(op, y, torch.full((y.shape[0],), 0.1, dtype=y.dtype), norm)
    for method, image in expected.items():
        assert not needs_prior(method)
        torch.testing.assert_close(reconstruct(method, problem, settings[method])["image"], image)


def test_settings_fill_defaults_and_reject_unknown_keys():
    assert method_settings("tv", {"n_iter": 5})["n_iter"] == 5
    assert method_settings("tv")["nonneg"] is True
    with pytest.raises(PAReconError, match="reconstruct.cgls"):
        method_settings("cgls", {"lambda": 1.0})
    with pytest.raises(PAReconError, match="method"):
        method_settings("fbp")
