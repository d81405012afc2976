"""Image-quality metrics, each with its convention stated.

Inputs: numpy arrays or torch tensors of shape ``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)``. ``x`` and ``ref``
must have the same shape after the channel axis is dropped. Outputs: float64 numpy arrays ``(B,)``, one value per
image (``B = 1`` for an ``(H, W)`` input). All computation is in float64.

Data range. When ``data_range`` is ``None``, PSNR and SSIM use each reference image's own range,
``ref.max() − ref.min()``. Reconstructions here are in pressure units with no fixed scale, so a fixed range
would mean nothing; pass ``data_range=1.0`` for images normalised to [0, 1]. A scalar applies to every image,
an array ``(B,)`` gives one range per image.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from pa_recon.checks import check_count, check_number
from pa_recon.errors import PAReconError

ArrayLike = np.ndarray | torch.Tensor
DataRange = float | np.ndarray | None

#: Wang et al. (2004): Gaussian window σ = 1.5 px, 11 × 11 (radius int(3.5σ + 0.5) = 5, as in scikit-image).
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _as_images(a: object, field: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().to(torch.float64).numpy()
    if not isinstance(a, np.ndarray):
        raise PAReconError(f"expected a numpy array or torch tensor, got {type(a).__name__}", field=field)
    a = a.astype(np.float64)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise PAReconError(f"expected shape (H, W), (B, H, W) or (B, 1, H, W), got {a.shape}", field=field)
    if not np.all(np.isfinite(a)):
        raise PAReconError("contains NaN or infinite values", field=field)
    return a


def _pair(x: ArrayLike, ref: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    xa, ra = _as_images(x, "x"), _as_images(ref, "ref")
    if xa.shape != ra.shape:
        raise PAReconError(f"image shape {xa.shape} does not match reference shape {ra.shape}", field="x")
    return xa, ra


def _data_range(ref: np.ndarray, data_range: DataRange) -> np.ndarray:
    if data_range is None:
        rng = ref.max(axis=(1, 2)) - ref.min(axis=(1, 2))
        message = "a constant reference image has no data range; pass data_range"
    else:
        try:
            rng = np.broadcast_to(np.asarray(data_range, dtype=np.float64), ref.shape[:1])
        except ValueError:
            raise PAReconError(f"expected a scalar or {ref.shape[0]} values", field="data_range") from None
        message = "must be positive and finite"
    if not np.all(np.isfinite(rng) & (rng > 0)):
        raise PAReconError(message, field="data_range")
    return rng


def psnr(x: ArrayLike, ref: ArrayLike, data_range: DataRange = None) -> np.ndarray:
    """Peak signal-to-noise ratio in dB per image: ``10 log10(R² / mean((x − ref)²))``; ``inf`` when equal."""
    xa, ra = _pair(x, ref)
    mse = ((xa - ra) ** 2).mean(axis=(1, 2))
    with np.errstate(divide="ignore"):
        return 10 * np.log10(_data_range(ra, data_range) ** 2 / mse)


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(SSIM_WINDOW) - SSIM_WINDOW // 2
    w = np.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return w / w.sum()


def _local_mean(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Gaussian-weighted mean over each window lying fully inside the image: ``(B, H, W)`` → ``(B, H−10, W−10)``."""
    a = sliding_window_view(a, w.size, axis=2) @ w
    return sliding_window_view(a, w.size, axis=1) @ w


def ssim(x: ArrayLike, ref: ArrayLike, data_range: DataRange = None) -> np.ndarray:
    """Mean structural similarity per image (Wang et al. 2004): 11 × 11 Gaussian window, σ = 1.5, K1 = 0.01,
    K2 = 0.03, population (not sample) local variances, averaged over the windows inside the image.

    Equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=R)``. Images must be at least 11 × 11.
    """
    xa, ra = _pair(x, ref)
    if min(xa.shape[1:]) < SSIM_WINDOW:
        raise PAReconError(f"SSIM needs images of at least {SSIM_WINDOW} × {SSIM_WINDOW}, got {xa.shape[1:]}",
                           field="x")
    c1, c2 = ((k * _data_range(ra, data_range))[:, None, None] ** 2 for k in (SSIM_K1, SSIM_K2))
    w = _gaussian_window()
    mx, mr = _local_mean(xa, w), _local_mean(ra, w)
    vx = _local_mean(xa * xa, w) - mx * mx
    vr = _local_mean(ra * ra, w) - mr * mr
    cov = _local_mean(xa * ra, w) - mx * mr
    s = (2 * mx * mr + c1) * (2 * cov + c2) / ((mx * mx + mr * mr + c1) * (vx + vr + c2))
    return s.mean(axis=(1, 2))


def relative_error(x: ArrayLike, ref: ArrayLike) -> np.ndarray:
    """``‖x − ref‖₂ / ‖ref‖₂`` per image (0 is perfect; 1 is as far as the zero image)."""
    xa, ra = _pair(x, ref)
    ref_norm = np.sqrt((ra**2).sum(axis=(1, 2)))
    if np.any(ref_norm == 0):
        raise PAReconError("a reference image is all zeros, so the relative error is undefined", field="ref")
    return np.sqrt(((xa - ra) ** 2).sum(axis=(1, 2))) / ref_norm


# ------------------------------------------------------------------------------------------------ uncertainty
# Inputs: a predicted ``mean`` (the estimate), its predicted pixel ``std`` (>= 0) and the ``truth``, all of one
# image shape as above. Errors are ``mean − truth``; everything is per image, in image units where it has units.
# ``n_samples`` (a count, or one per image ``(B,)``; None for a known std): ``mean`` and ``std`` are the sample
# mean and unbiased std of that many posterior draws. If the truth is one more draw of the same posterior, its
# error ``truth − mean`` then has variance ``σ²(1 + 1/n)``, not ``σ²``, and a level-``p`` interval for it is
# Student's ``mean ± t_{n−1}((1 + p)/2)·std·√(1 + 1/n)`` (exact for Gaussian draws), not ``mean ± z·std``.


def _uncertainty_inputs(mean: ArrayLike, std: ArrayLike, truth: ArrayLike,
                        n_samples: int | ArrayLike | None = None) -> tuple[np.ndarray, ...]:
    """``mean``, ``std`` and ``truth`` as float64 images ``(B, H, W)``, and the sample counts ``(B, 1, 1)``
    (``inf`` without ``n_samples``, which makes both corrections above vanish)."""
    m, t = _pair(mean, truth)
    s = _as_images(std, "std")
    if s.shape != m.shape:
        raise PAReconError(f"std shape {s.shape} does not match image shape {m.shape}", field="std")
    if np.any(s < 0):
        raise PAReconError("a standard deviation is negative", field="std")
    if n_samples is None:
        return m, s, t, np.full((len(m), 1, 1), np.inf)
    n = np.asarray(n_samples.detach().cpu() if isinstance(n_samples, torch.Tensor) else n_samples, dtype=np.float64)
    n = np.broadcast_to(n, (len(m),)) if n.ndim == 0 else n
    if n.shape != (len(m),):
        raise PAReconError(f"expected a count or {len(m)} counts, got shape {n.shape}", field="n_samples")
    if not np.all((n >= 2) & (n == np.round(n))):
        raise PAReconError("counts must be integers of at least 2 (one sample has no spread)", field="n_samples")
    return m, s, t, n.reshape(-1, 1, 1)


def calibration_bins(mean: ArrayLike, std: ArrayLike, truth: ArrayLike, n_bins: int = 10,
                     n_samples: int | ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability diagram of a predicted std: pixels of each image sorted by ``std`` into ``n_bins`` bins of
    equal count (sizes differ by at most one; ties keep pixel order). Returns, each ``(B, n_bins)``: the root mean
    predicted variance ``RMV = sqrt(mean(std²))``, the root mean squared error ``RMSE = sqrt(mean(err²))`` and the
    pixel count of each bin. Calibrated where ``RMSE = RMV``. Squared quantities are compared, not ``|err|`` with
    ``std`` (which differ by ``sqrt(2/π)`` even for exactly Gaussian errors). With ``n_samples`` the predicted
    variance is ``std²(1 + 1/n)`` (see the notes above).
    """
    m, s, t, n = _uncertainty_inputs(mean, std, truth, n_samples)
    n_pixels = s[0].size
    n_bins = check_count(n_bins, "n_bins", minimum=1, maximum=n_pixels)
    var, err2 = (s**2 * (1 + 1 / n)).reshape(len(s), -1), ((m - t) ** 2).reshape(len(s), -1)
    order = np.argsort(var, axis=1, kind="stable")
    var, err2 = np.take_along_axis(var, order, 1), np.take_along_axis(err2, order, 1)
    # Slices, not index arrays: an index array gives a column-major copy, whose row means then depend on the
    # other images of the batch in their last bits.
    bins = [slice(b[0], b[-1] + 1) for b in np.array_split(np.arange(n_pixels), n_bins)]
    rmv = np.stack([np.sqrt(var[:, b].mean(1)) for b in bins], axis=1)
    rmse = np.stack([np.sqrt(err2[:, b].mean(1)) for b in bins], axis=1)
    count = np.broadcast_to(np.array([b.stop - b.start for b in bins], dtype=np.float64), rmv.shape).copy()
    return rmv, rmse, count


def calibration_error(mean: ArrayLike, std: ArrayLike, truth: ArrayLike, n_bins: int = 10,
                      n_samples: int | ArrayLike | None = None) -> np.ndarray:
    """Expected calibration error of a predicted std, per image ``(B,)`` in image units:
    ``Σ_k (n_k / N) |RMSE_k − RMV_k|`` over the equal-count bins of :func:`calibration_bins`. 0 is calibrated."""
    rmv, rmse, count = calibration_bins(mean, std, truth, n_bins, n_samples)
    return (count * np.abs(rmse - rmv)).sum(1) / count.sum(1)


def interval_coverage(mean: ArrayLike, std: ArrayLike, truth: ArrayLike, level: float = 0.95,
                      n_samples: int | ArrayLike | None = None) -> np.ndarray:
    """Fraction of pixels per image ``(B,)`` whose truth lies in the interval ``mean ± q·std``; ends included.
    Calibrated when it equals ``level``. Without ``n_samples`` the Gaussian interval, ``q = Φ⁻¹((1 + level)/2)``
    (``level`` 0.68 → 0.994, 0.95 → 1.960); with it Student's prediction interval of the notes above,
    ``q = t_{n−1}((1 + level)/2)·√(1 + 1/n)`` (0.95 and 16 samples → 2.197). Built from mean and std, not sample
    quantiles, so it needs no stored samples.
    """
    from scipy.stats import t as student_t  # scipy.stats takes a second to import: only evaluation needs it

    m, s, t, n = _uncertainty_inputs(mean, std, truth, n_samples)
    level = check_number(level, "level", above=0, below=1)
    q = student_t.ppf((1 + level) / 2, n - 1) * np.sqrt(1 + 1 / n)
    return (np.abs(t - m) <= q * s).mean(axis=(1, 2))


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (any equal shapes), by ranks (Mann–Whitney U):
    ``(R₊ − n₊(n₊ + 1)/2) / (n₊ n₋)`` with ``R₊`` the sum of the positives' ranks, ties given their average rank
    (so a tied positive–negative pair counts ½). NaN when either class is absent.
    """
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64).ravel()
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).ravel()
    if s.shape != y.shape:
        raise PAReconError(f"{s.size} scores but {y.size} labels", field="labels")
    if not np.all(np.isfinite(s)):
        raise PAReconError("contains NaN or infinite values", field="scores")
    if not np.isin(y, (0, 1)).all():
        raise PAReconError("labels must be 0/1 or true/false", field="labels")
    positive = y.astype(bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata  # as in interval_coverage

    ranks = rankdata(s, method="average")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def flag_auroc(flags: ArrayLike, estimate: ArrayLike, truth: ArrayLike, error_threshold: float = 0.2) -> np.ndarray:
    """Per image ``(B,)``, how well a flag map ranks the pixels with a large error ``|estimate − truth| >
    error_threshold`` (image units; 0.2 for images in [0, 1]) above the others: :func:`auroc` of ``flags``.
    NaN for an image with no large error or no small one."""
    f = _as_images(flags, "flags")
    x, t = _pair(estimate, truth)
    if f.shape != x.shape:
        raise PAReconError(f"flag shape {f.shape} does not match image shape {x.shape}", field="flags")
    large = np.abs(x - t) > error_threshold
    return np.array([auroc(f[b], large[b]) for b in range(len(f))])
