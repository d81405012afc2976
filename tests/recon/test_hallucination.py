"""Hallucination flags on a constructed case: an operator blind to a 2 × 2 block of pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gaussian_prior import GaussianPrior, gaussian_case
from scipy import ndimage

from pa_recon.errors import PAReconError
from pa_recon.recon import (
    FlagRule,
    flag_score,
    hallucination_map,
    null_space_component,
    operator_norm,
    pooled_std,
    posterior_sampling,
    presence_contradiction,
    remove_small_regions,
    scan_values,
)


#: The unseen block of a (1, 4, 5) image: rows 1–2, columns 3–4.
BLIND = torch.zeros(1, 4, 5, dtype=torch.bool)
BLIND[0, 1:3, 3:5] = True


@pytest.fixture
def blind_op(dense_op):
    """The dense test operator with the columns of the unseen block zeroed: that block is its null space."""
    dense_op.matrix[:, BLIND.flatten()] = 0
    return dense_op


def sample(case, prior=None, **kwargs):
    return posterior_sampling(case.op, case.y, case.sigma, prior or case.prior, n_samples=64, chunk=32,
                              generator=torch.Generator().manual_seed(0), **kwargs)


def test_null_space_component_is_the_unseen_part(blind_op):
    x = 0.5 + torch.rand(2, 1, 4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    before = x.clone()
    exact = null_space_component(blind_op, x, lam=1e-12, n_iter=200)
    torch.testing.assert_close(exact, torch.where(BLIND, x, 0.0), rtol=0, atol=1e-6)
    # The default lam = 1e-3 ‖A‖² also shrinks the seen part a little: by at most lam / (lam + s_min²).
    lam = 1e-3 * operator_norm(blind_op, dtype=torch.float64) ** 2
    damped = null_space_component(blind_op, x, lam=lam)
    torch.testing.assert_close(damped[BLIND.expand_as(x)], x[BLIND.expand_as(x)], rtol=0, atol=1e-9)
    assert damped[~BLIND.expand_as(x)].abs().max() < 0.1 * x.max()
    assert torch.equal(x, before)


def test_the_unseen_region_is_flagged_and_nothing_else(blind_op):
    case = gaussian_case(blind_op, [0.01, 0.01], conditional=True, std_range=(0.2, 0.2))
    post = sample(case, presence_threshold=None)
    flags = hallucination_map(case.op, post.mean, post)
    region = BLIND.expand(2, 1, 4, 5)
    assert torch.equal(flags.mask, region)
    assert torch.all(flags.score[region] == 1) and torch.all(flags.score[~region] < 0.5)
    # 36 data values and 16 seen pixels: a consistent mean's χ² sits near 1 − 16/36, so the band is widened.
    values = scan_values(post, scan_chi2_tol=0.8)
    assert not values["scan_flag"].any() and torch.all(values["acceptance"] > 0.9)
    # Regions smaller than min_size pixels are dropped: the block has 4.
    assert not hallucination_map(case.op, post.mean, post, FlagRule(min_size=5)).mask.any()


def test_a_seen_problem_has_no_flags(dense_op):
    case = gaussian_case(dense_op, [0.01, 0.01], conditional=True, std_range=(0.2, 0.2))
    post = sample(case, presence_threshold=None)
    flags = hallucination_map(case.op, post.mean, post)
    assert not flags.mask.any() and flags.score.max() < 0.5


def test_an_invented_vessel_in_the_null_space_is_flagged_by_the_null_cue_alone(blind_op):
    case = gaussian_case(blind_op, [0.01, 0.01], conditional=True, std_range=(0.2, 0.2))
    post = sample(case)
    truth = torch.where(BLIND, 0.0, case.x)          # nothing in the unseen block
    invented = torch.where(BLIND, 0.8, case.x)       # a bright block there: the same data, A cannot tell
    torch.testing.assert_close(case.op(invented), case.op(truth), rtol=0, atol=1e-12)
    rule = FlagRule(weights=(0.0, 0.0, 1.0))
    assert not hallucination_map(case.op, truth, post, rule).mask.any()
    flags = hallucination_map(case.op, invented, post, rule)
    torch.testing.assert_close(flags.score, (flags.null_space.abs() / 0.2).clamp(max=1), rtol=0, atol=1e-12)
    assert torch.equal(flags.mask, BLIND.expand(2, 1, 4, 5))


def test_each_cue_follows_its_formula_and_they_combine_by_noisy_or(blind_op):
    case = gaussian_case(blind_op, [0.01, 0.01], conditional=True, std_range=(0.2, 0.2))
    post = sample(case, presence_threshold=0.5)
    x = post.mean
    std_cue = (post.std / 0.1).clamp(max=1)
    presence_cue = ((x > 0.5).double() - post.presence).abs()
    rule = dict(std_scale=0.1, null_scale=0.3)
    null = hallucination_map(case.op, x, post, FlagRule(weights=(0.0, 0.0, 1.0), **rule)).null_space
    null_cue = (null.abs() / 0.3).clamp(max=1)
    for weights, expected in [((1.0, 0.0, 0.0), std_cue), ((0.0, 1.0, 0.0), presence_cue),
                              ((1.0, 0.5, 1.0), 1 - (1 - std_cue) * (1 - 0.5 * presence_cue) * (1 - null_cue))]:
        score = hallucination_map(case.op, x, post, FlagRule(weights=weights, **rule)).score
        torch.testing.assert_close(score, expected, rtol=0, atol=1e-12)
    assert presence_cue.max() > 0  # the check above is not vacuous


def test_a_wrong_model_flags_the_scan(blind_op):
    case = gaussian_case(blind_op, [0.01, 0.01], conditional=True, std_range=(0.2, 0.2))
    shifted = GaussianPrior(case.mean, case.prior.chol, case.prior.image_shape, case.prior.latent_shapes(),
                            lambda data: case.prior.condition_fn(data) + 0.5)
    post = sample(case, prior=shifted)
    values = scan_values(post)
    assert values["scan_flag"].all() and torch.all(values["acceptance"] == 0) and torch.all(post.chi2_mean > 1.5)


def test_small_regions_are_removed_with_eight_connectivity():
    mask = torch.zeros(2, 1, 6, 7, dtype=torch.bool)
    mask[0, 0, [0, 1, 2], [0, 1, 2]] = True   # a diagonal line of 3: one 8-connected region
    mask[0, 0, 4, 5] = True                   # an isolated pixel
    mask[1, 0, 2:4, 2:4] = True               # a 2 × 2 block in the second image
    kept = remove_small_regions(mask, 3)
    expected = mask.clone()
    expected[0, 0, 4, 5] = False
    assert torch.equal(kept, expected)
    assert torch.equal(remove_small_regions(mask, 4), mask & (torch.arange(2) == 1).view(2, 1, 1, 1))
    assert torch.equal(remove_small_regions(mask, 0), mask)


@pytest.mark.parametrize("rule", [
    {"std_scale": 0.0}, {"std_pool": -0.5}, {"weights": (1.0, 2.0, 0.0)}, {"weights": (1.0, 1.0)}, {"threshold": 1.5},
    {"min_size": -1}, {"null_lam_fraction": -1.0}, {"null_iter": 0},
])
def test_bad_rules_raise(rule):
    with pytest.raises(PAReconError, match=next(iter(rule))):
        FlagRule(**rule)


def test_bad_estimates_raise(blind_op):
    case = gaussian_case(blind_op, [0.01, 0.01], conditional=True)
    post = sample(case)
    for estimate in (post.mean[:1], post.mean[..., :-1], torch.full_like(post.mean, torch.nan)):
        with pytest.raises(PAReconError, match="estimate"):
            hallucination_map(case.op, estimate, post)


def test_flag_score_is_the_noisy_or_of_the_scaled_cues():
    """std 0.1 at scale 0.2 gives 0.5, |null| 0.3 at scale 0.2 saturates at 1, contradiction 0.25; weights
    (1, 0.5, 0.5): 1 − (1 − 0.5)(1 − 0.5·0.25)(1 − 0.5·1) = 0.78125, and 0.75 without the presence cue."""
    rule = FlagRule(weights=(1.0, 0.5, 0.5))
    std, null, contradiction = (torch.full((1, 1, 2, 2), v, dtype=torch.float64) for v in (0.1, -0.3, 0.25))
    torch.testing.assert_close(flag_score(std, null, contradiction, rule), torch.full_like(std, 0.78125))
    torch.testing.assert_close(flag_score(std, null, None, rule), torch.full_like(std, 0.75))
    assert flag_score(torch.zeros_like(std), torch.zeros_like(std), torch.zeros_like(std)).eq(0).all()


def test_presence_contradiction_is_the_fraction_of_samples_that_disagree():
    estimate = torch.tensor([[[[0.5, 0.1], [0.3, 0.0]]]])
    presence = torch.tensor([[[[0.75, 0.25], [0.0, 1.0]]]])
    expected = torch.tensor([[[[0.25, 0.25], [1.0, 1.0]]]])
    torch.testing.assert_close(presence_contradiction(estimate, presence, 0.2), expected)


@pytest.mark.parametrize("width", [0.5, 1.0, 1.1, 2.0])
def test_pooled_std_is_the_root_of_the_gaussian_filtered_variance(width):
    """Against scipy's Gaussian filter (mirrored edges, 4-width truncation) on a random std of two images."""
    std = torch.rand(2, 1, 13, 17, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = np.sqrt(ndimage.gaussian_filter(std.numpy() ** 2, (0, 0, width, width), mode="mirror", truncate=4.0))
    torch.testing.assert_close(pooled_std(std, width), torch.from_numpy(expected), rtol=0, atol=1e-12)


def test_pooling_keeps_a_constant_std_and_spreads_a_spike():
    constant = torch.full((1, 1, 6, 7), 0.3, dtype=torch.float64)
    torch.testing.assert_close(pooled_std(constant, 1.5), constant, rtol=0, atol=1e-12)
    spike = torch.zeros(1, 1, 17, 17, dtype=torch.float64)   # wide enough that no mirror image reaches the spike
    spike[0, 0, 8, 8] = 1.0
    assert pooled_std(spike, 0.0) is spike
    pooled = pooled_std(spike, 1.0)
    # An interior spike's variance is spread, not lost: the pooled variances sum to the spike's.
    torch.testing.assert_close(pooled.pow(2).sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)
    assert pooled[0, 0, 8, 8] < 1.0 and pooled[0, 0, 8, 9] > 0 and pooled[0, 0, 8, 8] == pooled.max()
    with pytest.raises(PAReconError, match="std_pool"):
        pooled_std(spike, -1.0)


def test_the_std_cue_reads_the_pooled_std():
    """A lone high-std pixel (a noisy std estimate) stops firing the cue when pooled; a high-std patch still does."""
    std = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    std[0, 0, 2, 2] = 0.2
    std[0, 0, 6:11, 6:11] = 0.2
    zeros = torch.zeros_like(std)
    plain = flag_score(std, zeros, None, FlagRule(weights=(1.0, 0.0, 0.0)))
    pooled = flag_score(std, zeros, None, FlagRule(std_pool=1.0, weights=(1.0, 0.0, 0.0)))
    torch.testing.assert_close(pooled, (pooled_std(std, 1.0) / 0.2).clamp(max=1), rtol=0, atol=1e-12)
    assert plain[0, 0, 2, 2] == 1 and pooled[0, 0, 2, 2] < 0.5
    assert plain[0, 0, 8, 8] == 1 and pooled[0, 0, 8, 8] > 0.9


def test_presence_contradiction_counts_the_samples_against_the_estimate():
    estimate = torch.tensor([[[[0.1, 0.5]]]])
    presence = torch.tensor([[[[0.25, 0.75]]]])
    torch.testing.assert_close(presence_contradiction(estimate, presence, 0.2), torch.tensor([[[[0.25, 0.25]]]]))
