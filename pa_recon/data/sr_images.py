"""Super-resolution image sets: HR image folders, MATLAB-compatible bicubic resizing, training patch pairs.

Image convention: ``(H, W, 3)`` RGB arrays, height first. Files are read as uint8 (grey and palette images are
converted to RGB by repeating the grey level); the resizing functions work on any real array in float64 and do not
round or clip, so the SR protocol's 8-bit quantisation is an explicit, separate step (:func:`to_uint8`).

Bicubic resizing reproduces MATLAB's ``imresize(img, scale, 'bicubic')``, the convention of the SR literature
(Set5/Set14 LR inputs and the bicubic baseline are made with it): Keys' cubic kernel with a = −0.5; when
shrinking (scale < 1) the kernel is stretched by 1/scale (antialiasing), so a ×1/4 downscale averages a 16-pixel
footprint; output pixel x (1-based) samples the input at u = x/scale + 0.5·(1 − 1/scale); samples outside the
image are mirrored with the edge pixel repeated (MATLAB's ``symmetric`` padding); each output pixel's weights sum
to 1. Rows are resized first, then columns, each as one matrix product.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pa_recon.errors import PAReconError

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff")
KERNEL_WIDTH = 4.0


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files (suffixes in :data:`IMAGE_SUFFIXES`, any case) directly in ``folder``, sorted by name.

    Raises :class:`PAReconError` when the folder does not exist or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PAReconError("image folder not found", file=folder)
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise PAReconError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder", file=folder)
    return paths


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """The image at ``path`` as uint8 RGB ``(H, W, 3)``; grey or palette images become RGB, alpha is dropped.

    Raises :class:`PAReconError` naming the file when it is missing or cannot be decoded.
    """
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise PAReconError(f"cannot read image ({exc})", file=path) from None


def is_greyscale(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` stores a single grey channel (with or without alpha), from its header.

    The SR protocol scores such images (Set14's ``bridge``) on their grey levels instead of on Y; see
    :func:`pa_recon.sr_eval.psnr_y`. Raises :class:`PAReconError` naming the file when it cannot be read.
    """
    try:
        with Image.open(path) as image:
            return set(image.getbands()) <= {"1", "L", "I", "F", "A"}
    except (UnidentifiedImageError, OSError) as exc:
        raise PAReconError(f"cannot read image ({exc})", file=path) from None


def read_image_folder(folder: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every image of ``folder`` as uint8 RGB ``(H, W, 3)``, keyed by file stem, in sorted file-name order."""
    return {path.stem: read_image(path) for path in list_images(folder)}


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """``img`` ``(H, W, ...)`` cropped at the bottom and right to ``(H − H mod scale, W − W mod scale, ...)``.

    Returns a view. This is the SR convention for HR images, so that an integer ×1/scale downscale is exact.
    """
    if scale < 1:
        raise PAReconError(f"scale must be a positive integer, got {scale}", field="scale")
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] → uint8 ``round(255·x)`` (halves rounded up), clipped to 0-255, as MATLAB's
    ``im2uint8``. Same shape."""
    return np.floor(np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = −0.5 (MATLAB's ``cubic``); support [−2, 2], ``cubic(0) = 1``."""
    ax = np.abs(x)
    near = (1.5 * ax - 2.5) * ax**2 + 1.0
    far = ((-0.5 * ax + 2.5) * ax - 4.0) * ax + 2.0
    return np.where(ax <= 1.0, near, np.where(ax <= 2.0, far, 0.0))


def resize_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """The ``(out_len, in_len)`` float64 matrix of MATLAB's antialiased bicubic resize along one axis.

    Output pixel x = 1 … out_len samples input coordinate u = x/scale + 0.5·(1 − 1/scale) (pixel centres at
    1 … in_len) with the kernel ``cubic(k·d)``, k = min(scale, 1), over the ⌈4/k⌉ + 2 nearest pixels; weights are
    normalised to sum 1, and taps outside the image are folded back by symmetric padding.
    """
    k = min(scale, 1.0)
    width = KERNEL_WIDTH / k
    u = np.arange(1, out_len + 1) / scale + 0.5 * (1.0 - 1.0 / scale)
    taps = np.floor(u - width / 2)[:, None] + np.arange(math.ceil(width) + 2)
    weights = cubic(k * (u[:, None] - taps))
    weights /= weights.sum(axis=1, keepdims=True)
    folded = np.mod(taps.astype(np.int64) - 1, 2 * in_len)
    columns = np.where(folded < in_len, folded, 2 * in_len - 1 - folded)
    matrix = np.zeros((out_len, in_len))
    np.add.at(matrix, (np.repeat(np.arange(out_len), taps.shape[1]), columns.ravel()), weights.ravel())
    return matrix


def _size(img: np.ndarray) -> tuple[int, int]:
    if img.ndim not in (2, 3) or min(img.shape[:2]) < 1:
        raise PAReconError(f"expected an image (H, W) or (H, W, C), got shape {img.shape}", field="img")
    return img.shape[0], img.shape[1]


def _resize(img: np.ndarray, scale: float, out_h: int, out_w: int) -> np.ndarray:
    x = np.asarray(img, dtype=np.float64)
    rows = np.tensordot(resize_matrix(x.shape[0], out_h, scale), x, axes=(1, 0))
    return np.moveaxis(np.tensordot(resize_matrix(x.shape[1], out_w, scale), rows, axes=(1, 1)), 0, 1)


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` of ``(H, W)`` or ``(H, W, C)``.

    Returns float64 ``(⌈H·scale⌉, ⌈W·scale⌉[, C])``, neither rounded nor clipped (bicubic overshoots at edges).
    """
    if not (math.isfinite(scale) and scale > 0):
        raise PAReconError(f"scale must be positive and finite, got {scale}", field="scale")
    h, w = _size(img)
    # A 1e-9 margin keeps float noise (e.g. 255 · (1/3)) from adding a row, as the exact product would not.
    return _resize(img, scale, math.ceil(h * scale - 1e-9), math.ceil(w * scale - 1e-9))


def downscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Bicubic ×1/factor (MATLAB convention, antialiased) of ``(H, W[, C])`` with H, W multiples of ``factor``
    (see :func:`modcrop`): float64 ``(H/factor, W/factor[, C])``."""
    h, w = _size(img)
    if factor < 1 or h % factor or w % factor:
        raise PAReconError(f"image {h}×{w} is not a multiple of the factor {factor}; modcrop it first",
                           field="img")
    return _resize(img, 1.0 / factor, h // factor, w // factor)


def upscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Bicubic ×factor (MATLAB convention) of ``(H, W[, C])``: float64 ``(factor·H, factor·W[, C])``."""
    if factor < 1:
        raise PAReconError(f"factor must be a positive integer, got {factor}", field="factor")
    h, w = _size(img)
    return _resize(img, float(factor), h * factor, w * factor)


def _dihedral(a: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """``a`` ``(H, W, C)`` rotated by ``turns`` × 90° counter-clockwise, then mirrored left-right if ``flip``."""
    a = np.rot90(a, turns)
    return a[:, ::-1] if flip else a


class PatchSampler:
    """Random aligned HR/LR training patch pairs from a list of HR images (e.g. T91 + BSD200), reproducible.

    Each HR image (uint8 RGB ``(H, W, 3)``) is modcropped and its LR version made once, by the protocol's bicubic
    ×1/scale followed by 8-bit rounding. A pair is an LR patch ``(p, p)``, p = patch_size/scale, at a uniformly
    drawn position over all images (an image is chosen with probability proportional to its number of positions)
    and the HR patch ``(patch_size, patch_size)`` covering exactly the same area. With ``augment`` both get the
    same random one of the 8 flips/rotations by 90°, which commute with the bicubic downscale. Images smaller
    than the patch are skipped; their indices are in :attr:`skipped`.
    """

    def __init__(self, images: Sequence[np.ndarray], scale: int, patch_size: int, seed: int = 0,
                 augment: bool = True) -> None:
        if scale < 1 or patch_size < scale or patch_size % scale:
            raise PAReconError(f"patch_size {patch_size} must be a positive multiple of the scale {scale}",
                               field="patch_size")
        self.scale, self.patch_size, self.augment = scale, patch_size, augment
        self.skipped: list[int] = []
        self._hr: list[np.ndarray] = []
        self._lr: list[np.ndarray] = []
        for i, img in enumerate(images):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise PAReconError(f"expected a uint8 RGB image (H, W, 3), got {img.dtype} {img.shape}",
                                   field=f"images[{i}]")
            hr = modcrop(img, scale)
            if min(hr.shape[:2]) < patch_size:
                self.skipped.append(i)
                continue
            self._hr.append(hr)
            self._lr.append(to_uint8(downscale(hr / 255.0, scale)))
        if not self._hr:
            raise PAReconError(f"no image is at least {patch_size}×{patch_size}", field="images")
        lr_patch = patch_size // scale
        counts = np.array([(lr.shape[0] - lr_patch + 1) * (lr.shape[1] - lr_patch + 1) for lr in self._lr])
        self._p = counts / counts.sum()
        self._rng = np.random.default_rng(seed)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pairs: HR uint8 ``(n, 3, patch_size, patch_size)`` and LR uint8 ``(n, 3, p, p)``, channels first."""
        s, lr_patch = self.scale, self.patch_size // self.scale
        hr_out = np.empty((n, 3, self.patch_size, self.patch_size), dtype=np.uint8)
        lr_out = np.empty((n, 3, lr_patch, lr_patch), dtype=np.uint8)
        for k, index in enumerate(self._rng.choice(len(self._lr), size=n, p=self._p)):
            lr_img, hr_img = self._lr[index], self._hr[index]
            i = self._rng.integers(lr_img.shape[0] - lr_patch + 1)
            j = self._rng.integers(lr_img.shape[1] - lr_patch + 1)
            lr = lr_img[i : i + lr_patch, j : j + lr_patch]
            hr = hr_img[s * i : s * (i + lr_patch), s * j : s * (j + lr_patch)]
            if self.augment:
                turns, flip = int(self._rng.integers(4)), bool(self._rng.integers(2))
                lr, hr = _dihedral(lr, turns, flip), _dihedral(hr, turns, flip)
            lr_out[k], hr_out[k] = lr.transpose(2, 0, 1), hr.transpose(2, 0, 1)
        return hr_out, lr_out
