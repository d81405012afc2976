"""PSNR, SSIM and relative error: analytic values, scikit-image agreement, shapes and bad inputs; every per-image
metric of a batch equal to that of each image alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pa_recon.errors import PAReconError
from pa_recon.metrics import (
    calibration_bins,
    calibration_error,
    flag_auroc,
    interval_coverage,
    psnr,
    relative_error,
    ssim,
)


@pytest.fixture
def images() -> tuple[np.ndarray, np.ndarray]:
    """Two (B=3, 24, 20) image batches: references in [0, 1] and noisy, blurred-ish versions of them."""
    rng = np.random.default_rng(5)
    ref = rng.random((3, 24, 20))
    x = 0.8 * ref + 0.1 + 0.1 * rng.standard_normal(ref.shape)
    return x, ref


@pytest.mark.parametrize("delta", [1e-3, 0.1, 0.5])
def test_psnr_of_a_constant_offset(delta):
    ref = np.linspace(0, 1, 64).reshape(8, 8)
    assert psnr(ref + delta, ref, data_range=1.0)[0] == pytest.approx(-20 * np.log10(delta), rel=1e-12)
    # The default range is the reference's own: 2 here.
    assert psnr(2 * ref + delta, 2 * ref)[0] == pytest.approx(20 * np.log10(2 / delta), rel=1e-12)


def test_psnr_of_identical_images_is_infinite(images):
    assert np.all(np.isinf(psnr(images[1], images[1])))


def test_psnr_and_ssim_match_scikit_image(images):
    x, ref = images
    got_psnr, got_ssim = psnr(x, ref, data_range=1.0), ssim(x, ref, data_range=1.0)
    for b in range(3):
        assert got_psnr[b] == pytest.approx(peak_signal_noise_ratio(ref[b], x[b], data_range=1.0), rel=1e-12)
        expected = structural_similarity(ref[b], x[b], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False)
        assert got_ssim[b] == pytest.approx(expected, rel=1e-10)


def test_ssim_of_constant_images_and_of_identical_images(images):
    a, b = 0.3, 0.7
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(np.full((12, 12), a), np.full((12, 12), b), data_range=1.0)[0] == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(ssim(images[1], images[1]), 1.0, rtol=1e-12)


def test_relative_error_analytic_values(images):
    ref = images[1]
    np.testing.assert_allclose(relative_error(1.25 * ref, ref), 0.25, rtol=1e-12)
    np.testing.assert_allclose(relative_error(np.zeros_like(ref), ref), 1.0, rtol=1e-12)


@pytest.mark.parametrize("metric", [psnr, ssim, relative_error])
def test_shapes_and_array_types_agree(images, metric):
    x, ref = images
    per_image = metric(x, ref)
    assert per_image.shape == (3,) and per_image.dtype == np.float64
    np.testing.assert_allclose(metric(torch.from_numpy(x)[:, None], torch.from_numpy(ref)), per_image, rtol=1e-12)
    np.testing.assert_allclose(metric(x[1], ref[1]), per_image[1:2], rtol=1e-12)
    np.testing.assert_allclose(metric(x.astype(np.float32), ref), per_image, rtol=1e-5)


def test_per_image_data_range(images):
    x, ref = images
    ranges = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(psnr(x, ref, data_range=ranges), psnr(x, ref, data_range=1.0) + 20 * np.log10(ranges))


@pytest.mark.parametrize("metric", [psnr, ssim, relative_error])
def test_inputs_are_not_mutated(images, metric):
    x, ref = images
    xt, x_before, ref_before = torch.from_numpy(x.copy()), x.copy(), ref.copy()
    metric(x, ref)
    metric(xt, ref)
    assert np.array_equal(x, x_before) and np.array_equal(ref, ref_before) and np.array_equal(xt.numpy(), x)


@pytest.mark.parametrize("metric", [psnr, ssim, relative_error])
@pytest.mark.parametrize(
    "bad, field",
    [
        (lambda x, r: (x[:, :-1], r), "x"),
        (lambda x, r: (np.where(x > 0.5, np.nan, x), r), "x"),
        (lambda x, r: (x, np.where(r > 0.5, np.inf, r)), "ref"),
        (lambda x, r: (np.stack([x, x], axis=1), np.stack([r, r], axis=1)), "x"),
        (lambda x, r: (x.tolist(), r), "x"),
        (lambda x, r: (x[0, 0], r[0, 0]), "x"),
    ],
    ids=["shape", "nan", "inf", "channels", "list", "1d"],
)
def test_bad_inputs_raise_user_errors(images, metric, bad, field):
    with pytest.raises(PAReconError) as info:
        metric(*bad(*images))
    assert info.value.field == field


def test_undefined_cases_raise_user_errors(images):
    x, ref = images
    with pytest.raises(PAReconError, match="data range"):
        psnr(x[0], np.ones_like(ref[0]))
    with pytest.raises(PAReconError, match="positive and finite") as info:
        ssim(x, ref, data_range=-1.0)
    assert info.value.field == "data_range"
    with pytest.raises(PAReconError, match="a scalar or 3 values") as info:
        psnr(x, ref, data_range=np.ones(2))
    assert info.value.field == "data_range"
    with pytest.raises(PAReconError, match="at least 11"):
        ssim(x[:, :10], ref[:, :10])
    with pytest.raises(PAReconError, match="all zeros"):
        relative_error(x, np.zeros_like(ref))


@pytest.mark.parametrize("metric", [
    lambda m, s, t: psnr(m, t, data_range=1.0),
    lambda m, s, t: ssim(m, t, data_range=1.0),
    lambda m, s, t: relative_error(m, t),
    lambda m, s, t: calibration_error(m, s, t, n_samples=8),
    lambda m, s, t: np.concatenate(calibration_bins(m, s, t), axis=1),
    lambda m, s, t: interval_coverage(m, s, t, 0.95, n_samples=8),
    lambda m, s, t: flag_auroc(s, m, t),
])
def test_an_images_value_does_not_depend_on_the_others_of_its_batch(metric):
    # Bit for bit: an evaluation that reads a file a chunk of scans at a time gives each scan the value of the
    # whole stack.
    rng = np.random.default_rng(4)
    truth = rng.random((5, 32, 32))
    mean, std = truth + 0.2 * rng.normal(size=truth.shape), 0.05 + 0.2 * rng.random(truth.shape)
    batch = metric(mean, std, truth)
    alone = np.concatenate([metric(mean[i:i + 1], std[i:i + 1], truth[i:i + 1]) for i in range(5)])
    np.testing.assert_array_equal(batch, alone)
