"""Posterior sampling with the exact conditional Gaussian stand-in: moments and χ² against the analytic posterior,
chunked moment merging, rejection by data consistency, per-scan values and the scan flag rule, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gaussian_prior import LATENT_SHAPES, GaussianPrior, gaussian_case

from pa_recon.errors import PAReconError
from pa_recon.recon import AdamSettings, PosteriorResult, chi_square, posterior_sampling, scan_values


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def case(dense_op):
    """Three scans, σ = 0.05: a well-posed problem whose conditional prior is the exact posterior."""
    return gaussian_case(dense_op, [0.05] * 3, conditional=True)


def test_moments_and_data_consistency_match_the_analytic_posterior(case):
    n = 2000
    result = posterior_sampling(case.op, case.y, case.sigma, case.prior, n_samples=n, chunk=300, chi2_tol=None,
                                generator=seeded())
    std = torch.sqrt(torch.diagonal(case.post_cov, dim1=1, dim2=2))
    # Monte-Carlo errors: std/√N for the mean, about std/√(2N) for the std; 5 standard errors.
    assert torch.all((result.mean.flatten(1) - case.post_mean).abs() <= 5 * std / n**0.5)
    assert torch.all((result.std.flatten(1) - std).abs() <= 5 * std / (2 * n) ** 0.5)
    # E χ²_i = (‖A m − y‖² + tr(A C Aᵀ)) / (σ² M) for samples of N(m, C).
    m = case.post_mean.reshape(3, 1, 4, 5)
    trace = torch.einsum("ij,bjk,ik->b", case.op.matrix, case.post_cov, case.op.matrix)
    expected = chi_square(case.op, m, case.y, case.sigma) + trace / (case.sigma**2 * 36)
    chi2 = result.chi2
    assert chi2.shape == (3, n) and result.accepted.all()
    assert torch.all((chi2.mean(1) - expected).abs() <= 5 * chi2.std(1) / n**0.5)
    assert abs(float(chi2.mean()) - 1) < 0.3
    torch.testing.assert_close(result.chi2_mean, chi_square(case.op, result.mean, case.y, case.sigma))
    assert result.samples is None


def test_randomise_then_optimise_turns_prior_draws_into_posterior_draws(dense_op):
    # A "conditional" prior that ignores the data: its plain draws follow the prior N(μ, Σ), not the posterior.
    case = gaussian_case(dense_op, [0.05] * 2)
    prior = GaussianPrior(case.mean, torch.linalg.cholesky(case.cov), case.op.image_shape, LATENT_SHAPES,
                          lambda data: case.mean.expand(len(data), -1))
    n = 1000
    std = torch.sqrt(torch.diagonal(case.post_cov, dim1=1, dim2=2))
    plain = posterior_sampling(case.op, case.y, case.sigma, prior, n_samples=n, chunk=500, chi2_tol=None,
                               generator=seeded())
    assert torch.any((plain.mean.flatten(1) - case.post_mean).abs() > 10 * std / n**0.5)
    # For a linear generator RTO is exact once its optimisation converges.
    refine = AdamSettings(steps=4000, lr=5e-2, lr_decay=1e-4, tau=None)
    rto = posterior_sampling(case.op, case.y, case.sigma, prior, n_samples=n, chunk=500, chi2_tol=None,
                             refine=refine, generator=seeded())
    assert torch.all((rto.mean.flatten(1) - case.post_mean).abs() <= 5 * std / n**0.5)
    assert torch.all((rto.std.flatten(1) - std).abs() <= 5 * std / (2 * n) ** 0.5)
    assert abs(float(rto.chi2.mean()) - 1) < 0.3 < abs(float(plain.chi2.mean()) - 1)
    with pytest.raises(PAReconError, match="temperature"):
        posterior_sampling(case.op, case.y, case.sigma, prior, temperature=0.0, refine=refine)


def test_chunked_moments_equal_those_of_the_kept_samples(case):
    result = posterior_sampling(case.op, case.y, case.sigma, case.prior, n_samples=10, chunk=3, chi2_tol=None,
                                presence_threshold=0.5, keep=10, generator=seeded())
    s = result.samples
    assert s.shape == (3, 10, 1, 4, 5)
    torch.testing.assert_close(result.mean, s.mean(1), rtol=0, atol=1e-12)
    torch.testing.assert_close(result.std, s.std(1), rtol=0, atol=1e-12)
    torch.testing.assert_close(result.presence, (s > 0.5).double().mean(1), rtol=0, atol=1e-12)
    chi2 = chi_square(case.op, s.flatten(0, 1), case.y.repeat_interleave(10, 0), case.sigma.repeat_interleave(10))
    torch.testing.assert_close(result.chi2, chi2.view(3, 10), rtol=0, atol=1e-12)
    partial = posterior_sampling(case.op, case.y, case.sigma, case.prior, n_samples=10, chunk=3, keep=4,
                                 generator=seeded())
    torch.testing.assert_close(partial.samples, s[:, :4], rtol=0, atol=0)


def test_samples_far_from_the_noise_level_are_rejected(case):
    # Tempered samples spread 1.6× too wide: some stay consistent, many do not.
    result = posterior_sampling(case.op, case.y, case.sigma, case.prior, n_samples=40, chunk=16, temperature=1.6,
                                chi2_tol=0.5, keep=40, generator=seeded())
    ok = result.accepted
    assert torch.equal(ok, (result.chi2 - 1).abs() <= 0.5)
    assert 0.1 < ok.double().mean() < 0.9 and ok.any(1).all()
    w = ok.double()[..., None, None, None]
    count = w.sum(1)
    mean = (w * result.samples).sum(1) / count
    var = (w * (result.samples - mean[:, None]) ** 2).sum(1) / (count - 1)
    presence = (w * (result.samples > 0.2)).sum(1) / count
    torch.testing.assert_close(result.mean, mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.std, var.sqrt(), rtol=0, atol=1e-12)
    torch.testing.assert_close(result.presence, presence, rtol=0, atol=1e-12)


def test_a_scan_without_consistent_samples_falls_back_to_all_and_shows_a_bad_mean_misfit(case):
    shifted = GaussianPrior(case.mean, case.prior.chol, case.prior.image_shape, case.prior.latent_shapes(),
                            lambda data: case.prior.condition_fn(data) + 1.0)
    result = posterior_sampling(case.op, case.y, case.sigma, shifted, n_samples=12, chunk=5, keep=12,
                                generator=seeded())
    assert not result.accepted.any()
    torch.testing.assert_close(result.mean, result.samples.mean(1), rtol=0, atol=1e-12)
    assert result.used.tolist() == [12.0] * len(case.y)
    assert torch.all(result.chi2_mean > 10)


def test_a_scan_with_one_accepted_sample_uses_all_samples_since_one_has_no_spread(case):
    draws = posterior_sampling(case.op, case.y, case.sigma, case.prior, n_samples=10, chunk=4, temperature=1.6,
                               chi2_tol=None, presence_threshold=0.5, keep=10, generator=seeded())
    # A band that admits one sample of the scan whose second-best sample fits worst, and two or more of another
    # scan; the draws do not depend on the band.
    best_two = (draws.chi2 - 1).abs().sort(1).values[:, :2]
    lone = int(best_two[:, 1].argmax())
    below = max(float(best_two[lone, 0]), float(best_two[:, 1].sort().values[-2]))
    result = posterior_sampling(case.op, case.y, case.sigma, case.prior, n_samples=10, chunk=4, temperature=1.6,
                                chi2_tol=(below + float(best_two[lone, 1])) / 2, presence_threshold=0.5, keep=10,
                                generator=seeded())
    counts = result.accepted.sum(1)
    assert counts[lone] == 1 and (counts >= 2).any()
    assert result.used.tolist() == [10 if n < 2 else n for n in counts.tolist()]
    s = draws.samples
    for b, n in enumerate(counts.tolist()):
        pick = s[b] if n < 2 else s[b][result.accepted[b]]
        torch.testing.assert_close(result.mean[b], pick.mean(0), rtol=0, atol=1e-12)
        torch.testing.assert_close(result.std[b], pick.std(0), rtol=0, atol=1e-12)
        torch.testing.assert_close(result.presence[b], (pick > 0.5).double().mean(0), rtol=0, atol=1e-12)
    assert torch.all(result.std[lone] > 0)


def test_scan_values_are_the_acceptance_the_median_sample_chi2_and_the_flag(case):
    result = posterior_sampling(case.op, case.y, case.sigma, case.prior, n_samples=10, chunk=4, temperature=1.6,
                                generator=seeded())
    values = scan_values(result)
    chi2 = result.chi2.numpy()
    torch.testing.assert_close(values["acceptance"], result.accepted.double().sum(1) / 10, rtol=0, atol=0)
    assert torch.equal(values["samples"], result.used)
    assert ((values["acceptance"] > 0) & (values["acceptance"] < 1)).any()
    torch.testing.assert_close(values["chi2_median"], torch.from_numpy(np.median(chi2, axis=1)), rtol=1e-12, atol=0)
    assert not values["scan_flag"].any()  # the mean fits (chi2_mean within 1 ± 0.5) and samples were accepted


def test_scan_flag_rule_on_chosen_values():
    """Mean χ² inside / on / outside the band 1 ± 0.5, and a scan without accepted samples."""
    chi2_mean = torch.tensor([1.0, 1.5, 0.4, 2.0, 1.0], dtype=torch.float64)
    accepted = torch.tensor([[True, False]] * 4 + [[False, False]])
    result = PosteriorResult(mean=None, std=None, used=torch.full((5,), 2.0, dtype=torch.float64),
                             chi2=torch.ones(5, 2, dtype=torch.float64), accepted=accepted, chi2_mean=chi2_mean,
                             presence=None, presence_threshold=None, samples=None)
    assert scan_values(result)["scan_flag"].tolist() == [False, False, True, True, True]
    assert scan_values(result, scan_chi2_tol=2.0)["scan_flag"].tolist() == [False] * 4 + [True]
    assert scan_values(result)["acceptance"].tolist() == [0.5] * 4 + [0.0]
    with pytest.raises(PAReconError, match="scan_chi2_tol"):
        scan_values(result, scan_chi2_tol=float("nan"))


def test_same_seed_same_draws(case):
    runs = [posterior_sampling(case.op, case.y, case.sigma, case.prior, n_samples=6, generator=seeded(s))
            for s in (4, 4, 5)]
    assert torch.equal(runs[0].mean, runs[1].mean) and not torch.equal(runs[0].mean, runs[2].mean)


@pytest.mark.parametrize("refine", [None, AdamSettings(steps=3, lr=0.05, tau=None)])
def test_per_scan_generators_make_a_scans_draws_independent_of_its_batch_and_the_chunking(case, refine):
    def run(rows, seeds, chunk=2):
        return posterior_sampling(case.op, case.y[rows], case.sigma[rows], case.prior, n_samples=5, chunk=chunk,
                                  refine=refine, generator=[seeded(s) for s in seeds])

    whole = run([0, 1, 2], [10, 11, 12])
    alone = run([2], [12])
    torch.testing.assert_close(alone.mean, whole.mean[2:], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone.chi2, whole.chi2[2:], rtol=1e-5, atol=1e-6)
    for chunk in (1, 5):
        other = run([0, 1, 2], [10, 11, 12], chunk)
        torch.testing.assert_close(other.chi2, whole.chi2, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(other.std, whole.std, rtol=1e-5, atol=1e-6)
    # One generator for the batch draws scan 2's values after scans 0 and 1's.
    shared = posterior_sampling(case.op, case.y, case.sigma, case.prior, n_samples=5, chunk=2, refine=refine,
                                generator=seeded(12))
    assert not torch.allclose(shared.mean[2:], alone.mean)
    assert not torch.allclose(run([2], [13]).mean, alone.mean)
    with pytest.raises(PAReconError, match="one generator per scan"):
        run([0, 1], [10])


def test_inputs_are_not_mutated(case):
    before = [t.clone() for t in (case.y, case.sigma, case.prior.chol)]
    posterior_sampling(case.op, case.y, case.sigma, case.prior, n_samples=4, generator=seeded())
    assert all(torch.equal(t, b) for t, b in zip((case.y, case.sigma, case.prior.chol), before))


def test_a_marginal_prior_is_refused(dense_op):
    marginal = gaussian_case(dense_op, [0.1])
    with pytest.raises(PAReconError, match="conditional"):
        posterior_sampling(marginal.op, marginal.y, marginal.sigma, marginal.prior)


@pytest.mark.parametrize("change, field", [
    ({"n_samples": 1}, "n_samples"), ({"chunk": 0}, "chunk"), ({"keep": 9}, "keep"),
    ({"temperature": -1.0}, "temperature"), ({"chi2_tol": -0.1}, "chi2_tol"),
    ({"presence_threshold": float("nan")}, "presence_threshold"),
])
def test_bad_settings_raise(case, change, field):
    with pytest.raises(PAReconError) as err:
        posterior_sampling(case.op, case.y, case.sigma, case.prior, **{"n_samples": 8, **change})
    assert err.value.field == field


@pytest.mark.parametrize("y, sigma, field", [
    (lambda c: torch.full_like(c.y, torch.nan), lambda c: c.sigma, "y"),
    (lambda c: c.y[:, :2], lambda c: c.sigma, "y"),
    (lambda c: c.y, lambda c: torch.zeros(3, dtype=torch.float64), "sigma"),
    (lambda c: c.y, lambda c: c.sigma[:2], "sigma"),
])
def test_bad_data_raise(case, y, sigma, field):
    with pytest.raises(PAReconError) as err:
        posterior_sampling(case.op, y(case), sigma(case), case.prior)
    assert err.value.field == field
