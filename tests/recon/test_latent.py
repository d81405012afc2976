"""Latent-space MAP: for a linear G it is the image-space MAP, so it meets the same closed form."""

from __future__ import annotations

import pytest
import torch
from gaussian_prior import gaussian_case, gaussian_posterior

from pa_recon.errors import PAReconError
from pa_recon.recon import AdamSettings, chi_square, map_latent

CONVERGE = AdamSettings(steps=1000, lr=0.2, lr_decay=0.01, tau=None)


def test_latent_map_matches_the_closed_form(dense_op):
    case = gaussian_case(dense_op, [0.05, 0.1, 0.2])
    result = map_latent(case.op, case.y, case.sigma, case.prior, settings=CONVERGE)
    torch.testing.assert_close(result.image.flatten(1), case.post_mean, rtol=0, atol=1e-6)
    assert [tuple(z.shape) for z in result.latents] == [(3, 1, 2, 5), (3, 2, 1, 5)]
    for z, expected in zip(result.latents, case.prior.encode(result.image)):
        torch.testing.assert_close(z, expected, rtol=0, atol=1e-9)
    # History: the objective ½‖A G(z) − y‖²/σ² + ½‖z‖², starting at z = 0, i.e. the prior mean.
    r0 = case.op(case.mean.expand(3, -1).reshape(3, 1, 4, 5)) - case.y
    torch.testing.assert_close(result.history[0], 0.5 * (r0**2).flatten(1).sum(1) / case.sigma**2)


def test_conditional_latent_map(dense_op):
    case = gaussian_case(dense_op, [0.1, 0.1], conditional=True)
    cond = case.prior.condition(case.op, case.y)
    result = map_latent(case.op, case.y, case.sigma, case.prior, settings=CONVERGE)
    expected, _ = gaussian_posterior(case.op.matrix, case.y, case.sigma, cond.flatten(1), case.post_cov[0])
    torch.testing.assert_close(result.image.flatten(1), expected, rtol=0, atol=1e-6)


def test_start_latents_are_used_and_not_mutated(dense_op):
    case = gaussian_case(dense_op, [0.1, 0.1])
    z0 = case.prior.encode(case.x)
    before = [z.clone() for z in z0]
    result = map_latent(case.op, case.y, case.sigma, case.prior, z0=z0, settings=AdamSettings(steps=0))
    torch.testing.assert_close(result.image, case.x, rtol=0, atol=1e-12)
    moved = map_latent(case.op, case.y, case.sigma, case.prior, z0=z0, settings=AdamSettings(steps=5, tau=None))
    assert all(torch.equal(z, b) for z, b in zip(z0, before))
    assert not torch.equal(moved.latents[0], z0[0])


def test_discrepancy_stop_in_latent_space(dense_op):
    case = gaussian_case(dense_op, [0.1, 0.01], noise=0.1)
    result = map_latent(case.op, case.y, case.sigma, case.prior, settings=AdamSettings(steps=300, lr=0.1))
    assert result.stopped == ("discrepancy", "max_steps")
    assert chi_square(case.op, result.image, case.y, case.sigma)[0] <= 1


@pytest.mark.parametrize("z0, message", [
    ([torch.zeros(2, 1, 2, 5)], "expected 2 latents"),
    ([torch.zeros(2, 1, 2, 5), torch.zeros(2, 2, 1, 4)], "expected 2 latents"),
    ([torch.zeros(2, 1, 2, 5), torch.full((2, 2, 1, 5), torch.nan)], "NaN or infinite"),
])
def test_bad_start_latents_raise(dense_op, z0, message):
    case = gaussian_case(dense_op, [0.1, 0.1])
    with pytest.raises(PAReconError, match=message) as err:
        map_latent(case.op, case.y, case.sigma, case.prior, z0=z0)
    assert err.value.field == "z0"
