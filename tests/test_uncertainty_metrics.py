"""Calibration error, interval coverage and AUROC on hand-computed cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pa_recon.errors import PAReconError
from pa_recon.metrics import auroc, calibration_bins, calibration_error, flag_auroc, interval_coverage


def pairwise_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC by counting positive–negative pairs: 1 if the positive scores higher, ½ for a tie."""
    pos, neg = scores[labels], scores[~labels]
    wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
    return float(np.mean(wins))


@pytest.mark.parametrize("scores, labels, expected", [
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),        # 3 of the 4 pairs ordered right
    ([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1], 0.875),        # one tied pair counts ½: (1 + ½ + 1 + 1) / 4
    ([1.0, 2.0, 3.0], [0, 1, 1], 1.0),
    ([1.0, 2.0, 3.0], [1, 1, 0], 0.0),
    ([7.0, 7.0, 7.0, 7.0], [1, 0, 1, 0], 0.5),
])
def test_auroc_hand_computed(scores, labels, expected):
    assert auroc(np.array(scores), np.array(labels)) == pytest.approx(expected, abs=1e-15)


def test_auroc_equals_pair_counting_with_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)
    labels = rng.random(200) < 0.3
    assert auroc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(pairwise_auroc(scores, labels),
                                                                              abs=1e-12)


def test_auroc_is_nan_without_both_classes():
    assert np.isnan(auroc(np.array([0.1, 0.2]), np.array([True, True])))


def test_flag_auroc_per_image():
    truth = np.zeros((2, 2, 2))
    estimate = np.array([[[0.5, 0.0], [0.3, 0.1]], [[0.0, 0.1], [0.0, 0.1]]])   # image 0: two errors > 0.2
    flags = np.array([[[0.9, 0.2], [0.1, 0.3]], [[0.5, 0.5], [0.5, 0.5]]])
    got = flag_auroc(flags, estimate, truth)
    # Image 0: positives score 0.9 and 0.1, negatives 0.2 and 0.3: pairs won 2 of 4. Image 1: no large error.
    assert got[0] == pytest.approx(0.5) and np.isnan(got[1])


def test_coverage_hand_computed():
    mean, std = np.zeros((1, 2, 2)), np.ones((1, 2, 2))
    truth = np.array([[[0.5, -0.99], [1.5, 2.5]]])
    assert interval_coverage(mean, std, truth, 0.68)[0] == 0.5     # z = 0.994: 0.5 and 0.99 inside
    assert interval_coverage(mean, std, truth, 0.95)[0] == 0.75    # z = 1.960: also 1.5
    assert interval_coverage(mean, np.zeros((1, 2, 2)), mean, 0.68)[0] == 1.0   # ends are included


def test_coverage_and_calibration_of_exact_gaussian_errors():
    rng = np.random.default_rng(1)
    std = rng.uniform(0.05, 0.5, (2, 200, 200))
    truth = rng.random((2, 200, 200))
    mean = truth + std * rng.standard_normal(std.shape)
    for level in (0.68, 0.95):
        # Standard error of a coverage over 40 000 pixels: sqrt(p (1 − p) / n) < 0.0025.
        assert np.all(np.abs(interval_coverage(mean, std, truth, level) - level) < 0.01)
    assert np.all(calibration_error(mean, std, truth) < 0.01)
    assert np.all(calibration_error(mean, 2 * std, truth) > 0.1)   # over-confident twice: badly calibrated


def test_student_intervals_cover_a_new_draw_from_the_sampled_posterior():
    """Truth and n samples all drawn from one Gaussian per pixel: the interval built from the samples' mean and
    unbiased std covers the truth at its level with the counts, and falls short without them."""
    rng = np.random.default_rng(2)
    counts = np.array([4, 16])
    sigma = rng.uniform(0.05, 0.5, (2, 150, 150))
    centre = rng.random((2, 150, 150))
    truth = centre + sigma * rng.standard_normal(sigma.shape)
    mean, std = np.empty_like(sigma), np.empty_like(sigma)
    for b, n in enumerate(counts):
        draws = centre[b] + sigma[b] * rng.standard_normal((n, *sigma.shape[1:]))
        mean[b], std[b] = draws.mean(0), draws.std(0, ddof=1)
    for level in (0.68, 0.95):
        # Standard error of a coverage over 22 500 pixels: below 0.0035.
        assert np.all(np.abs(interval_coverage(mean, std, truth, level, counts) - level) < 0.012)
    assert interval_coverage(mean, std, truth, 0.95)[0] < 0.88          # 4 samples: the z-interval is too short
    # One bin compares mean(std²(1 + 1/n)) with mean(err²); E[std²] = σ² and E[err²] = σ²(1 + 1/n).
    rmv, rmse, _ = calibration_bins(mean, std, truth, n_bins=1, n_samples=counts)
    np.testing.assert_allclose(rmv, rmse, rtol=0.02)
    assert calibration_bins(mean, std, truth, n_bins=1)[0][0, 0] < 0.92 * rmse[0, 0]


def test_student_interval_hand_computed():
    # 16 samples at level 0.95: q = t_15(0.975)·√(17/16) = 2.197, between 1.96 and 2.2.
    mean, std = np.zeros((1, 2, 2)), np.ones((1, 2, 2))
    truth = np.array([[[2.0, 2.19], [2.2, -2.5]]])
    assert interval_coverage(mean, std, truth, 0.95)[0] == 0.0
    assert interval_coverage(mean, std, truth, 0.95, 16)[0] == 0.5
    assert interval_coverage(mean, std, truth, 0.95, torch.tensor([16.0]))[0] == 0.5


def test_calibration_bins_hand_computed():
    std = np.array([[[0.1, 0.1, 0.1], [0.3, 0.3, 0.3]]])
    err = np.array([[[0.1, -0.1, 0.1], [0.6, -0.6, 0.6]]])
    rmv, rmse, count = calibration_bins(err, std, np.zeros_like(err), n_bins=2)
    np.testing.assert_allclose(rmv, [[0.1, 0.3]], rtol=1e-12)
    np.testing.assert_allclose(rmse, [[0.1, 0.6]], rtol=1e-12)
    np.testing.assert_array_equal(count, [[3, 3]])
    assert calibration_error(err, std, np.zeros_like(err), n_bins=2)[0] == pytest.approx(0.15, rel=1e-12)


def test_calibration_with_unequal_bins():
    # Five pixels into two bins of 3 and 2 (sorted by std): |RMSE − RMV| = 0 and 0.2, weighted 2/5.
    std = np.array([[0.4, 0.1, 0.1, 0.4, 0.1]])
    err = np.array([[0.6, 0.1, -0.1, -0.6, 0.1]])
    rmv, rmse, count = calibration_bins(err, std, np.zeros_like(err), n_bins=2)
    np.testing.assert_array_equal(count, [[3, 2]])
    assert calibration_error(err, std, np.zeros_like(err), n_bins=2)[0] == pytest.approx(0.4 * 0.2, rel=1e-12)


@pytest.mark.parametrize("call, field", [
    (lambda m: calibration_error(m, -np.ones_like(m), m), "std"),
    (lambda m: calibration_error(m, np.ones((1, 3, 3)), m), "std"),
    (lambda m: calibration_error(m, np.ones_like(m), m, n_bins=17), "n_bins"),
    (lambda m: interval_coverage(m, np.ones_like(m), m, level=1.0), "level"),
    (lambda m: interval_coverage(m, np.full_like(m, np.nan), m), "std"),
    (lambda m: interval_coverage(m, np.ones_like(m), m, n_samples=1), "n_samples"),
    (lambda m: interval_coverage(m, np.ones_like(m), m, n_samples=2.5), "n_samples"),
    (lambda m: calibration_error(m, np.ones_like(m), m, n_samples=np.array([4, 4])), "n_samples"),
    (lambda m: auroc(np.ones(3), np.ones(4)), "labels"),
    (lambda m: auroc(np.array([np.nan, 1.0]), np.array([0, 1])), "scores"),
    (lambda m: flag_auroc(np.ones((1, 3, 3)), m, m), "flags"),
    (lambda m: auroc(np.array([0.1, 0.2, 0.3]), np.array([0.0, 0.4, 1.0])), "labels"),
    (lambda m: auroc(np.array([0.1, 0.2, 0.3]), np.array([0, 2, 2])), "labels"),
    (lambda m: calibration_error(m, np.ones_like(m), m, n_bins=True), "n_bins"),
    (lambda m: interval_coverage(m, np.ones_like(m), m, level="0.95"), "level"),
])
def test_bad_inputs_raise(call, field):
    with pytest.raises(PAReconError) as err:
        call(np.zeros((1, 4, 4)))
    assert err.value.field == field


def test_numpy_scalars_are_accepted_as_settings():
    rng = np.random.default_rng(0)
    mean, std, truth = rng.random((1, 4, 4)), np.ones((1, 4, 4)), rng.random((1, 4, 4))
    assert interval_coverage(mean, std, truth, np.float32(0.5)) == interval_coverage(mean, std, truth, 0.5)
    assert calibration_error(mean, std, truth, n_bins=np.int64(2)) == calibration_error(mean, std, truth, n_bins=2)
    assert auroc(np.array([0.1, 0.2, 0.3]), np.array([False, True, True])) == 1.0
