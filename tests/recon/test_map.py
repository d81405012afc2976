"""Image-space MAP against the closed-form linear-Gaussian MAP, stopping rules, batching and bad inputs."""

from __future__ import annotations

import pytest
import torch
from gaussian_prior import GaussianPrior, gaussian_case, gaussian_posterior

from pa_recon.errors import PAReconError
from pa_recon.metrics import relative_error
from pa_recon.physics.geometry import Grid, LinearArray
from pa_recon.physics.operator import PATOperator
from pa_recon.recon import (
    AdamSettings,
    ImagePrior,
    back_projection,
    cgls,
    chi_square,
    map_image,
    map_latent,
    operator_norm,
    tv_reconstruction,
)
from pa_recon.recon import map as map_module
from pa_recon.recon.prior_protocol import check_prior

CONVERGE = AdamSettings(steps=1000, lr=3e-2, lr_decay=0.01, tau=None)


@pytest.mark.parametrize("lam", [1.0, 0.3, 3.0])
def test_map_matches_the_closed_form_with_per_scan_sigma(dense_op, lam):
    case = gaussian_case(dense_op, [0.05, 0.1, 0.2])
    result = map_image(case.op, case.y, case.sigma, case.prior, lam=lam, settings=CONVERGE)
    # λ·NLL of N(μ, Σ) is the NLL of N(μ, Σ/λ) up to a constant.
    expected, _ = gaussian_posterior(case.op.matrix, case.y, case.sigma, case.mean, case.cov / lam)
    torch.testing.assert_close(result.image.flatten(1), expected, rtol=0, atol=1e-6)
    assert result.stopped == ("max_steps",) * 3 and result.latents is None
    assert torch.equal(result.steps, torch.full((3,), 1000))


def test_conditional_prior_is_conditioned_on_the_data(dense_op):
    case = gaussian_case(dense_op, [0.1, 0.1], conditional=True)
    cond = case.prior.condition(case.op, case.y)
    result = map_image(case.op, case.y, case.sigma, case.prior, settings=CONVERGE)
    # Prior N(c, C) with c the posterior mean: the MAP is the posterior of that prior.
    expected, _ = gaussian_posterior(case.op.matrix, case.y, case.sigma, cond.flatten(1), case.post_cov[0])
    torch.testing.assert_close(result.image.flatten(1), expected, rtol=0, atol=1e-6)


def test_history_starts_at_the_back_projection_and_descends_to_the_closed_form_minimum(dense_op):
    case = gaussian_case(dense_op, [0.05, 0.1, 0.2])
    result = map_image(case.op, case.y, case.sigma, case.prior, x0="backprojection",
                       settings=AdamSettings(steps=300, lr=3e-2, tau=None))
    start = back_projection(case.op, case.y, nonneg=True)
    torch.testing.assert_close(result.history[0], case.objective(start), rtol=1e-12, atol=0)
    torch.testing.assert_close(result.history[-1], case.objective(result.image), rtol=1e-12, atol=0)
    assert result.history.shape == (301, 3)
    assert torch.all(result.history[-1] < result.history[0])
    # 300 steps reach the closed-form minimum of this well-conditioned problem.
    optimum = case.objective(case.post_mean.reshape(3, 1, 4, 5))
    torch.testing.assert_close(result.history[-1], optimum, rtol=1e-9, atol=0)


def test_start_at_the_prior_centre(dense_op):
    case = gaussian_case(dense_op, [0.1])
    result = map_image(case.op, case.y, case.sigma, case.prior, x0="prior", settings=AdamSettings(steps=0))
    torch.testing.assert_close(result.image.flatten(1), case.mean[None], rtol=0, atol=0)
    assert result.history.shape == (1, 1) and result.stopped == ("max_steps",)


def test_auto_start_is_the_latent_map_or_the_tv_image(dense_op):
    none = AdamSettings(steps=0)
    conditional = gaussian_case(dense_op, [0.1, 0.1], conditional=True)
    auto = map_image(conditional.op, conditional.y, conditional.sigma, conditional.prior, settings=none)
    latent = map_image(conditional.op, conditional.y, conditional.sigma, conditional.prior, x0="latent",
                       settings=none)
    torch.testing.assert_close(auto.image, latent.image, rtol=0, atol=0)
    marginal = gaussian_case(dense_op, [0.1, 0.2])
    auto = map_image(marginal.op, marginal.y, marginal.sigma, marginal.prior, settings=none)
    tv = map_image(marginal.op, marginal.y, marginal.sigma, marginal.prior, x0="tv", settings=none)
    torch.testing.assert_close(auto.image, tv.image, rtol=0, atol=0)
    assert not torch.allclose(latent.image[:1], tv.image[:1])


def test_auto_start_sends_the_scans_whose_latent_start_the_prior_finds_atypical_to_tv(dense_op):
    case = gaussian_case(dense_op, [0.02, 0.02, 0.02], conditional=True, noise=0.1)
    none = AdamSettings(steps=0)
    latent = map_image(case.op, case.y, case.sigma, case.prior, x0="latent", settings=none)
    tv = map_image(case.op, case.y, case.sigma, case.prior, x0="tv", settings=none)
    cond = case.prior.condition(case.op, case.y)
    nll = case.prior.nll(latent.image, cond) / 20  # 4 × 5 pixels
    torch.testing.assert_close(latent.start_nll, nll, rtol=1e-12, atol=0)
    assert latent.starts == ("latent",) * 3 and tv.starts == ("tv",) * 3 and tv.start_nll is None
    order = torch.argsort(nll)
    assert nll[order[1]] - nll[order[0]] > 1e-3  # distinct, so that a threshold between them splits the scans
    threshold = float(nll[order[0]] + nll[order[1]]) / 2
    split = map_image(case.op, case.y, case.sigma, case.prior, settings=none, latent_nll_max=threshold)
    for i in range(3):
        expected = latent if i == order[0] else tv
        torch.testing.assert_close(split.image[i], expected.image[i], rtol=0, atol=0)
    assert split.starts == tuple("latent" if i == order[0] else "tv" for i in range(3))
    torch.testing.assert_close(split.start_nll, latent.start_nll, rtol=0, atol=0)
    # A threshold above every scan's NLL keeps the latent starts.
    kept = map_image(case.op, case.y, case.sigma, case.prior, settings=none, latent_nll_max=float(nll.max()) + 1)
    torch.testing.assert_close(kept.image, latent.image, rtol=0, atol=0)
    assert kept.starts == ("latent",) * 3


def test_starts_name_what_each_scan_began_from(dense_op):
    case = gaussian_case(dense_op, [0.1, 0.2])
    none = AdamSettings(steps=0)
    for x0, name in (("backprojection", "backprojection"), ("prior", "prior"), (case.x, "image")):
        result = map_image(case.op, case.y, case.sigma, case.prior, x0=x0, settings=none)
        assert result.starts == (name, name) and result.start_nll is None


@pytest.mark.parametrize("x0, nll_max", [("tv", -1.0), ("latent", -1.0), ("auto", "low"), ("auto", float("nan"))])
def test_latent_nll_max_needs_the_auto_start_and_a_number(dense_op, x0, nll_max):
    case = gaussian_case(dense_op, [0.1, 0.1], conditional=True)
    with pytest.raises(PAReconError) as err:
        map_image(case.op, case.y, case.sigma, case.prior, x0=x0, latent_nll_max=nll_max)
    assert err.value.field == "latent_nll_max"


def test_latent_start_is_the_latent_map_with_its_settings(dense_op):
    case = gaussian_case(dense_op, [0.1, 0.1], conditional=True)
    latent_settings = AdamSettings(steps=40, lr=5e-2, tau=None)
    expected = map_latent(case.op, case.y, case.sigma, case.prior, settings=latent_settings).image
    result = map_image(case.op, case.y, case.sigma, case.prior, x0="latent", settings=AdamSettings(steps=0),
                       latent_settings=latent_settings)
    torch.testing.assert_close(result.image, expected, rtol=0, atol=0)
    centre = map_image(case.op, case.y, case.sigma, case.prior, x0="prior", settings=AdamSettings(steps=0))
    assert not torch.allclose(result.image, centre.image)
    # The image-space steps go on from there and lower the objective further.
    refined = map_image(case.op, case.y, case.sigma, case.prior, x0="latent", latent_settings=latent_settings,
                        settings=AdamSettings(steps=200, lr=3e-2, tau=None))
    torch.testing.assert_close(refined.history[0], result.history[0], rtol=1e-12, atol=0)
    assert torch.all(refined.history[-1] < refined.history[0])


def test_latent_start_computes_the_condition_once(dense_op, monkeypatch):
    case = gaussian_case(dense_op, [0.1, 0.1], conditional=True)
    calls = []
    condition = case.prior.condition
    monkeypatch.setattr(case.prior, "condition", lambda op, y: calls.append(1) or condition(op, y))
    map_image(case.op, case.y, case.sigma, case.prior, x0="latent", settings=AdamSettings(steps=2),
              latent_settings=AdamSettings(steps=2))
    assert len(calls) == 1


def test_a_given_latent_start_stands_in_for_the_latent_descent(dense_op, monkeypatch):
    case = gaussian_case(dense_op, [0.02, 0.02, 0.02], conditional=True, noise=0.1)
    latent_settings = AdamSettings(steps=30, lr=5e-2, tau=None)
    start = map_latent(case.op, case.y, case.sigma, case.prior, settings=latent_settings).image
    steps = AdamSettings(steps=20, lr=3e-2, tau=None)
    computed = map_image(case.op, case.y, case.sigma, case.prior, settings=steps, latent_settings=latent_settings)
    nll = computed.start_nll
    threshold = float(nll.min() + nll.max()) / 2  # some scans keep their latent start, the others go to TV
    split = map_image(case.op, case.y, case.sigma, case.prior, settings=steps, latent_settings=latent_settings,
                      latent_nll_max=threshold)
    monkeypatch.setattr(map_module, "latent_descent", lambda *a, **k: pytest.fail("ran the latent descent"))
    before = start.clone()
    for expected, nll_max in ((computed, None), (split, threshold)):
        given = map_image(case.op, case.y, case.sigma, case.prior, settings=steps, latent_start=start,
                          latent_nll_max=nll_max)
        for a, b in ((given.image, expected.image), (given.history, expected.history),
                     (given.start_nll, expected.start_nll), (given.steps, expected.steps)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert given.starts == expected.starts
    assert set(split.starts) == {"latent", "tv"} and torch.equal(start, before)


@pytest.mark.parametrize("conditional, x0, change, message", [
    (True, "auto", lambda x: x[:1], "expected images of shape"),
    (True, "latent", lambda x: x[..., :-1], "expected images of shape"),
    (True, "latent", lambda x: torch.where(x > x.mean(), torch.inf, x), "NaN or infinite"),
    (True, "latent", lambda x: x.numpy(), "expected images of shape"),
    (True, "tv", lambda x: x, "applies to a latent start only"),
    (False, "auto", lambda x: x, "applies to a latent start only"),
])
def test_a_latent_start_that_does_not_fit_is_refused(dense_op, conditional, x0, change, message):
    case = gaussian_case(dense_op, [0.1, 0.1], conditional=conditional)
    with pytest.raises(PAReconError, match=message) as err:
        map_image(case.op, case.y, case.sigma, case.prior, x0=x0, latent_start=change(case.x))
    assert err.value.field == "latent_start"


def test_tv_start_is_the_tv_method_with_its_defaults(dense_op):
    case = gaussian_case(dense_op, [0.1, 0.2])
    norm = operator_norm(case.op, dtype=torch.float64)
    expected = tv_reconstruction(case.op, case.y, lam=1e-3 * norm**2, n_iter=200, nonneg=True, op_norm=norm).image
    none = AdamSettings(steps=0)
    for op_norm in (norm, None):  # ‖A‖ given, or estimated by the same power iteration
        result = map_image(case.op, case.y, case.sigma, case.prior, x0="tv", settings=none, op_norm=op_norm)
        torch.testing.assert_close(result.image, expected, rtol=0, atol=1e-12)
    assert not torch.allclose(expected, back_projection(case.op, case.y, nonneg=True))


def test_discrepancy_principle_stops_each_scan_on_its_own(dense_op):
    # True noise 0.1. Stated σ = 1: the start already fits. σ = 0.1: reached on the way. σ = 0.01: never.
    case = gaussian_case(dense_op, [1.0, 0.1, 0.01], noise=0.1)
    settings = AdamSettings(steps=300, lr=3e-2, tau=1.0, check_every=7)
    result = map_image(case.op, case.y, case.sigma, case.prior, x0="backprojection", settings=settings)
    assert result.stopped == ("discrepancy", "discrepancy", "max_steps")
    assert result.steps[0] == 0 and 0 < result.steps[1] < 300 and result.steps[2] == 300
    torch.testing.assert_close(result.image[0], back_projection(case.op, case.y, nonneg=True)[0], rtol=0, atol=0)
    chi2 = chi_square(case.op, result.image, case.y, case.sigma)
    assert chi2[0] <= 1 and chi2[1] <= 1 and chi2[2] > 1
    # The step before the stop did not fit yet: the first fitting iterate is returned.
    alone = map_image(case.op, case.y[1:2], case.sigma[1:2], case.prior, x0="backprojection",
                      settings=AdamSettings(steps=int(result.steps[1]) - 1, lr=3e-2, tau=None))
    assert chi_square(case.op, alone.image, case.y[1:2], case.sigma[1:2]) > 1
    # A stopped scan is frozen while the others go on: each result equals its solo run.
    for b in range(3):
        solo = map_image(case.op, case.y[b:b + 1], case.sigma[b:b + 1], case.prior, x0="backprojection",
                         settings=settings)
        torch.testing.assert_close(solo.image, result.image[b:b + 1], rtol=0, atol=1e-12)
        assert solo.stopped[0] == result.stopped[b]


def test_loop_ends_at_the_first_check_after_all_scans_stopped(dense_op):
    case = gaussian_case(dense_op, [0.1, 0.1], noise=0.1)
    for check_every in (1, 10):
        result = map_image(case.op, case.y, case.sigma, case.prior,
                           settings=AdamSettings(steps=300, lr=3e-2, check_every=check_every))
        last_stop = int(result.steps.max())
        assert result.stopped == ("discrepancy",) * 2
        assert last_stop < result.history.shape[0] <= last_stop + check_every + 1


class BoundedPrior(GaussianPrior):
    """The Gaussian stand-in, undefined (NaN) for images with a pixel above ``limit``."""

    limit = 2.0

    def nll(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        value = super().nll(x, cond)
        return torch.where(x.flatten(1).max(1).values > self.limit, torch.nan, value)


def test_a_scan_whose_objective_turns_nan_keeps_its_last_finite_iterate(dense_op):
    case = gaussian_case(dense_op, [0.1, 0.1])
    prior = BoundedPrior(case.mean, case.prior.chol, case.prior.image_shape, case.prior.latent_shapes())
    y = case.y.clone()
    y[0] = case.op(torch.full_like(case.x[:1], 5.0))[0]  # pulls scan 0 far above the limit
    start = torch.full_like(case.x, 0.5)
    result = map_image(case.op, y, case.sigma, prior, x0=start, settings=AdamSettings(steps=200, lr=3e-2, tau=None))
    assert result.stopped == ("diverged", "max_steps")
    assert result.image[0].max() <= prior.limit and 0 < result.steps[0] < 200
    assert not torch.isfinite(result.history[:, 0]).all() and torch.isfinite(result.history[:, 1]).all()
    # After the NaN step the history goes on at the restored iterate.
    torch.testing.assert_close(result.history[-1], case.objective(result.image, y, prior), rtol=1e-12, atol=0)


def test_the_stand_in_satisfies_the_protocol(dense_op):
    case = gaussian_case(dense_op, [0.1])
    assert isinstance(case.prior, ImagePrior)
    with pytest.raises(PAReconError, match="does not implement the ImagePrior protocol"):
        check_prior(object(), dense_op)
    with pytest.raises(PAReconError, match="needs a conditional prior"):
        check_prior(case.prior, dense_op, conditional=True)


def test_a_prior_of_another_grid_is_named_as_such(dense_op):
    case = gaussian_case(dense_op, [0.1])
    transposed = type(dense_op)(dense_op.matrix, (1, 5, 4), dense_op.data_shape)
    for run in (map_image, map_latent):
        with pytest.raises(PAReconError, match=r"the operator's images \(1, 5, 4\) are not this prior's "
                                               r"\(1, 4, 5\): the prior was trained for another grid") as err:
            run(transposed, case.y, case.sigma, case.prior)
        assert err.value.field == "op"


def test_inputs_are_not_mutated(dense_op):
    case = gaussian_case(dense_op, [0.05, 0.1])
    x0 = torch.full_like(case.x, 0.4)
    before = [t.clone() for t in (case.y, case.sigma, x0, case.mean, case.prior.chol)]
    result = map_image(case.op, case.y, case.sigma, case.prior, x0=x0, settings=AdamSettings(steps=20))
    for t, b in zip((case.y, case.sigma, x0, case.mean, case.prior.chol), before):
        assert torch.equal(t, b)
    assert result.image.data_ptr() != x0.data_ptr()


@pytest.mark.parametrize("change, field", [
    (lambda c: {"y": torch.where(c.y > 0, torch.nan, c.y)}, "y"),
    (lambda c: {"y": c.y[..., :-1]}, "y"),
    (lambda c: {"sigma": torch.tensor([0.1, 0.0])}, "sigma"),
    (lambda c: {"sigma": -1.0}, "sigma"),
    (lambda c: {"sigma": torch.tensor([0.1, 0.1, 0.1])}, "sigma"),
    (lambda c: {"sigma": "0.1"}, "sigma"),
    (lambda c: {"x0": c.x[:1]}, "x0"),
    (lambda c: {"x0": c.x[..., :-1]}, "x0"),
    (lambda c: {"x0": "zeros"}, "x0"),
    (lambda c: {"x0": 3}, "x0"),
    (lambda c: {"lam": "strong"}, "lam"),
    (lambda c: {"prior": object()}, "prior"),
    (lambda c: {"lam": -1.0}, "lam"),
])
def test_bad_inputs_raise(dense_op, change, field):
    case = gaussian_case(dense_op, [0.1, 0.1])
    kwargs = {"y": case.y, "sigma": case.sigma, "prior": case.prior, **change(case)}
    with pytest.raises(PAReconError) as err:
        map_image(case.op, kwargs.pop("y"), kwargs.pop("sigma"), kwargs.pop("prior"), **kwargs)
    assert err.value.field == field


def test_on_the_pat_operator_a_white_gaussian_prior_gives_tikhonov():
    """float32, 16 × 16 grid, 16 elements: prior N(0, s² I) makes the MAP the CGLS solution with lam = σ²/s²."""
    dx = 1e-4
    op = PATOperator(Grid(nx=16, nz=16, dx=dx), LinearArray.uniform(16, pitch=dx, fs=1500.0 / dx, n_samples=64))
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = op(x)
    sigma = 0.02 * y.abs().amax((1, 2))
    y = y + sigma[:, None, None] * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    s = 0.1
    prior = GaussianPrior(torch.zeros(256), s * torch.eye(256), (1, 16, 16), [(1, 16, 16)])
    result = map_image(op, y, sigma, prior, settings=AdamSettings(steps=300, lr=5e-2, lr_decay=0.01, tau=None))
    assert result.image.dtype == torch.float32
    for b in range(2):
        expected = cgls(op, y[b:b + 1], lam=float(sigma[b] / s) ** 2, n_iter=100, tol=1e-6).image
        assert relative_error(result.image[b:b + 1], expected)[0] < 2e-2
    # A weaker prior lets the data be fitted to the noise level: the discrepancy principle ends the run early.
    weak = GaussianPrior(torch.zeros(256), 0.5 * torch.eye(256), (1, 16, 16), [(1, 16, 16)])
    stopped = map_image(op, y, sigma, weak)
    assert stopped.stopped == ("discrepancy",) * 2 and torch.all(stopped.steps < 300)
