"""The SR evaluation protocol: Y conversion, shaving, Y/RGB PSNR and SSIM against scikit-image, LR consistency
with known answers, diversity."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pa_recon import sr_eval
from pa_recon.data.sr_images import downscale, to_uint8
from pa_recon.errors import PAReconError

RNG = np.random.default_rng(5)


def pair(h: int = 40, w: int = 36) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish uint8 HR image and a noisy version of it as the SR output."""
    hr = to_uint8(np.clip(RNG.random((h, w, 3)) * 0.5 + np.linspace(0, 0.5, w)[None, :, None], 0, 1))
    sr = to_uint8(np.clip(hr / 255.0 + RNG.normal(0, 0.03, hr.shape), 0, 1))
    return sr, hr


def test_y_of_black_white_and_primaries():
    colours = np.array([[[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]]], dtype=float)
    np.testing.assert_allclose(sr_eval.rgb_to_y(colours)[0], [16, 235, 81.481, 144.553, 40.966, 125.5], atol=1e-12)
    image = RNG.random((5, 4, 3))
    np.testing.assert_allclose(sr_eval.rgb_to_y(image), rgb2ycbcr(image)[..., 0], atol=1e-10)


def test_quantize():
    img = np.array([[[0.0, 0.5 / 255, 1.3], [-0.2, 100.4 / 255, 100.6 / 255]]])
    np.testing.assert_array_equal(sr_eval.quantize(img), [[[0, 1, 255], [0, 100, 101]]])
    as_uint8 = np.array([[[3, 4, 5]]], dtype=np.uint8)
    np.testing.assert_array_equal(sr_eval.quantize(as_uint8), [[[3.0, 4.0, 5.0]]])
    for bad, message in [(np.zeros((4, 4)), "RGB image"), (np.zeros((2, 2, 3), np.int32), "float"),
                         (np.full((2, 2, 3), np.nan), "NaN")]:
        with pytest.raises(PAReconError, match=message):
            sr_eval.quantize(bad)


def test_shave_removes_exactly_the_border():
    img = np.arange(10 * 8 * 3).reshape(10, 8, 3)
    out = sr_eval.shave(img, 2)
    assert out.shape == (6, 4, 3)
    np.testing.assert_array_equal(out, img[2:8, 2:6])
    assert sr_eval.shave(img, 0).shape == img.shape
    with pytest.raises(PAReconError, match="cannot shave"):
        sr_eval.shave(img, 4)


def test_psnr_y_and_ssim_y_match_an_independent_computation():
    sr, hr = pair()
    y_sr, y_hr = (rgb2ycbcr(a / 255.0)[4:-4, 4:-4, 0] for a in (sr, hr))
    assert sr_eval.psnr_y(sr, hr, 4) == pytest.approx(peak_signal_noise_ratio(y_hr, y_sr, data_range=255), abs=1e-10)
    expected_ssim = structural_similarity(y_hr, y_sr, data_range=255, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False)
    assert sr_eval.ssim_y(sr, hr, 4) == pytest.approx(expected_ssim, abs=1e-10)
    # Float inputs are scored as their 8-bit versions.
    assert sr_eval.psnr_y(sr / 255.0 + 0.4 / 255, hr / 255.0, 4) == pytest.approx(sr_eval.psnr_y(sr, hr, 4))
    assert sr_eval.psnr_y(hr / 255.0, hr, 4) == np.inf and sr_eval.ssim_y(hr, hr, 4) == pytest.approx(1.0)


def test_grey_rule_scores_grey_levels_instead_of_y():
    sr, hr = (np.repeat(a[..., :1], 3, axis=2) for a in pair())
    # Y = 16 + 219·g/255 shrinks every difference by 219/255, so on Y the same error reads 20·log10(255/219) better.
    shift = 20 * np.log10(255 / 219)
    assert sr_eval.psnr_y(sr, hr, 2) == pytest.approx(sr_eval.psnr_y(sr, hr, 2, grey=True) + shift, abs=1e-10)
    g_sr, g_hr = (a[2:-2, 2:-2, 0].astype(float) for a in (sr, hr))
    assert sr_eval.psnr_y(sr, hr, 2, grey=True) == pytest.approx(
        peak_signal_noise_ratio(g_hr, g_sr, data_range=255), abs=1e-10)
    assert sr_eval.ssim_y(sr, hr, 2, grey=True) == pytest.approx(
        structural_similarity(g_hr, g_sr, data_range=255, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False), abs=1e-10)


def test_rgb_metrics_match_srflows_scikit_image_calls():
    sr, hr = pair()
    assert sr_eval.psnr_rgb(sr, hr) == pytest.approx(peak_signal_noise_ratio(hr, sr), abs=1e-10)
    assert sr_eval.ssim_rgb(sr, hr) == pytest.approx(structural_similarity(hr, sr, channel_axis=-1), abs=1e-10)
    with pytest.raises(PAReconError, match="does not match"):
        sr_eval.psnr_rgb(sr[:-1], hr)


def test_lr_psnr_known_answers():
    sr = 0.2 + 0.6 * RNG.random((24, 32, 3))
    lr = to_uint8(downscale(to_uint8(sr) / 255.0, 4))
    assert sr_eval.lr_psnr(sr, lr, 4) == np.inf
    for k in (1, 3, 10):  # an offset of δ = k/255 everywhere: PSNR = −20·log10(δ)
        assert sr_eval.lr_psnr(sr, lr + np.uint8(k), 4) == pytest.approx(-20 * np.log10(k / 255), abs=1e-10)
    with pytest.raises(PAReconError, match="not 4 × the lr shape"):
        sr_eval.lr_psnr(sr, lr[:-1], 4)


def test_diversity():
    base = RNG.random((6, 5, 3))
    assert sr_eval.diversity(np.stack([base, base, base])) == 0.0
    a = to_uint8(base * 0.5)
    samples = np.stack([a, a + np.uint8(6)])  # every pixel: levels x and x + 6, std 3
    assert sr_eval.diversity(samples) == pytest.approx(3.0)
    with pytest.raises(PAReconError, match="at least 2 samples"):
        sr_eval.diversity(base[None])
