"""The super-resolution evaluation protocol: PSNR/SSIM on the Y channel with the border shaved, full-image RGB
PSNR/SSIM, LR consistency and sample diversity.

Images are numpy arrays ``(H, W, 3)``, RGB, either float in [0, 1] or uint8. Like the published protocols, every
metric first quantises float images to 8 bits, ``round(255·x)`` after clipping to [0, 1] (MATLAB's
``im2uint8``), so an output is scored as the PNG it would be saved as; uint8 images are used as they are. All
metrics are then computed in float64 on the 0-255 scale, with peak value 255.

Two protocols are in use and both are provided:

* **Y channel** (SRCNN, VDSR, EDSR … the bicubic Set5/Set14 figures): luma Y of ITU-R BT.601 as MATLAB's
  ``rgb2ycbcr``, kept in float (not rounded to an integer level), with ``scale`` pixels shaved off every side;
  SSIM with an 11 × 11 Gaussian window, σ = 1.5 (Wang et al. 2004, :func:`pa_recon.metrics.ssim`). A test image
  stored as a single grey channel (Set14's ``bridge``) is scored on its grey levels 0-255 instead, as the
  standard MATLAB scripts do (they convert only 3-channel files): pass ``grey=True``. On Y (16-235) the same
  error would read 20·log10(255/219) = 1.32 dB better; the published bicubic Set14 figure is reproduced only
  with the grey rule (``benchmarks/sr_bicubic.py``).
* **RGB, full image** (SRFlow): PSNR over all pixels and channels, no shave; SSIM as SRFlow's code computes it,
  scikit-image's default ``structural_similarity`` per channel (7 × 7 uniform window, sample covariances),
  averaged over the three channels.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from pa_recon import metrics
from pa_recon.data.sr_images import downscale, to_uint8
from pa_recon.errors import PAReconError

PEAK = 255.0
#: MATLAB ``rgb2ycbcr`` luma row for RGB in [0, 1]: Y = 16 + 65.481 R + 128.553 G + 24.966 B, in [16, 235].
Y_WEIGHTS = np.array([65.481, 128.553, 24.966])
Y_OFFSET = 16.0


def quantize(img: np.ndarray, field: str = "img") -> np.ndarray:
    """``(..., 3)`` float image in [0, 1] or uint8 → float64 8-bit levels 0-255 (``round(255·x)``, clipped).

    Raises :class:`PAReconError` for other shapes or dtypes and for NaN or infinite values.
    """
    if not isinstance(img, np.ndarray) or img.ndim < 3 or img.shape[-1] != 3:
        described = getattr(img, "shape", type(img).__name__)
        raise PAReconError(f"expected an RGB image array (H, W, 3), got {described}", field=field)
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if not np.issubdtype(img.dtype, np.floating):
        raise PAReconError(f"expected float in [0, 1] or uint8 values, got {img.dtype}", field=field)
    if not np.all(np.isfinite(img)):
        raise PAReconError("contains NaN or infinite values", field=field)
    return to_uint8(img).astype(np.float64)


def _pair(sr: np.ndarray, ref: np.ndarray, ref_field: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = quantize(sr, "sr"), quantize(ref, ref_field)
    if a.ndim != 3 or a.shape != b.shape:
        raise PAReconError(f"sr shape {a.shape} does not match {ref_field} shape {b.shape}", field="sr")
    return a, b


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Luma ``(H, W)`` on the 0-255 scale (16 for black, 235 for white) of an RGB image ``(H, W, 3)`` in [0, 1]:
    ITU-R BT.601 as MATLAB's ``rgb2ycbcr`` for double input. No quantisation is done here."""
    return Y_OFFSET + np.asarray(img, dtype=np.float64) @ Y_WEIGHTS


def shave(img: np.ndarray, border: int) -> np.ndarray:
    """``img`` ``(H, W, ...)`` without ``border`` pixels on each side: ``(H − 2·border, W − 2·border, ...)``."""
    h, w = img.shape[:2]
    if border < 0 or 2 * border >= min(h, w):
        raise PAReconError(f"cannot shave {border} pixels from each side of a {h}×{w} image", field="border")
    return img[border : h - border, border : w - border]


def _luma(levels: np.ndarray, grey: bool) -> np.ndarray:
    """Y, or with ``grey`` the channel mean, of an image of 8-bit levels ``(H, W, 3)``: ``(H, W)``, 0-255 scale."""
    return levels.mean(axis=-1) if grey else rgb_to_y(levels / PEAK)


def _luma_shaved(sr: np.ndarray, hr: np.ndarray, scale: int, grey: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = _pair(sr, hr, "hr")
    return shave(_luma(a, grey), scale), shave(_luma(b, grey), scale)


def psnr_y(sr: np.ndarray, hr: np.ndarray, scale: int, grey: bool = False) -> float:
    """PSNR in dB (peak 255) of the Y channels of ``sr`` and ``hr`` ``(H, W, 3)``, ``scale`` pixels shaved off
    each side; ``inf`` when they are equal. ``grey=True`` (single-channel test image): the channel means instead."""
    return float(metrics.psnr(*_luma_shaved(sr, hr, scale, grey), data_range=PEAK)[0])


def ssim_y(sr: np.ndarray, hr: np.ndarray, scale: int, grey: bool = False) -> float:
    """SSIM of the Y channels of ``sr`` and ``hr`` ``(H, W, 3)``, ``scale`` pixels shaved off each side: 11 × 11
    Gaussian window, σ = 1.5, data range 255, over the windows inside the shaved image (MATLAB ``ssim_index``).
    ``grey=True`` (single-channel test image): the channel means instead."""
    return float(metrics.ssim(*_luma_shaved(sr, hr, scale, grey), data_range=PEAK)[0])


def _psnr_all(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR over every value of two 0-255 images (H, W, 3); a mean over all values, so channels sit side by side."""
    return float(metrics.psnr(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1), data_range=PEAK)[0])


def psnr_rgb(sr: np.ndarray, hr: np.ndarray) -> float:
    """PSNR in dB (peak 255) over all pixels and the three channels of ``(H, W, 3)`` images, no shave (SRFlow)."""
    return _psnr_all(*_pair(sr, hr, "hr"))


def ssim_rgb(sr: np.ndarray, hr: np.ndarray) -> float:
    """SSIM of ``(H, W, 3)`` images as SRFlow computes it: scikit-image's default per-channel SSIM (7 × 7 uniform
    window, sample covariances, data range 255), averaged over the channels, full image."""
    a, b = _pair(sr, hr, "hr")
    return float(structural_similarity(a, b, win_size=7, data_range=PEAK, channel_axis=-1))


def lr_psnr(sr: np.ndarray, lr: np.ndarray, scale: int) -> float:
    """LR consistency in dB: PSNR (RGB, full image, peak 255) between the input ``lr`` ``(h, w, 3)`` and the
    output ``sr`` ``(scale·h, scale·w, 3)`` downscaled by the protocol's bicubic ×1/scale and rounded to 8 bits.

    ``inf`` when the downscaled output reproduces the input exactly (SRFlow reports about 50 dB).
    """
    a, b = quantize(sr, "sr"), quantize(lr, "lr")
    if a.shape != (scale * b.shape[0], scale * b.shape[1], 3):
        raise PAReconError(f"sr shape {a.shape} is not {scale} × the lr shape {b.shape}", field="sr")
    return _psnr_all(to_uint8(downscale(a / PEAK, scale)).astype(np.float64), b)


def diversity(samples: np.ndarray) -> float:
    """Mean over pixels and channels of the standard deviation across samples (population, ddof 0), in 8-bit
    levels (0-255 scale), of ``S ≥ 2`` samples ``(S, H, W, 3)`` for one input; 0 when all samples agree."""
    q = quantize(samples, "samples")
    if q.ndim != 4 or q.shape[0] < 2:
        raise PAReconError(f"expected at least 2 samples (S, H, W, 3), got shape {q.shape}", field="samples")
    return float(q.std(axis=0).mean())
