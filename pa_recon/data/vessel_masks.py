"""Random crops of binary vessel masks from a folder laid out like DRIVE (retinal vessel annotations).

DRIVE keeps its manual vessel annotations in ``<root>/<subset>/1st_manual/NN_manual1.gif`` (values 0/255;
other annotators' GIFs store palette indices 0/1, so masks are binarised with ``> 0``). Every image file found
in any ``1st_manual`` folder below ``root`` is one mask; a folder without such sub-folders is read as a flat
folder of mask images. The split into train and validation is by mask file, fixed for a given file list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image

from pa_recon.checks import check_number
from pa_recon.errors import PAReconError

__all__ = ["CropParams", "VesselMaskFolder"]

_IMAGE_SUFFIXES = {".gif", ".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg"}
_ANNOTATION_DIR = "1st_manual"
# The file-level split must not change between runs or machines, so it has its own fixed seed.
_SPLIT_SEED = 20040401


@dataclass(frozen=True)
class CropParams:
    """Augmentation of a crop.

    ``scale_range``: output pixels per source pixel (a crop of ``nz/s × nx/s`` source pixels is resized to
    ``nz × nx``; raised where needed so the window fits the mask). Each crop is also flipped left-right and/or
    up-down with probability 1/2 and rotated by a uniform multiple of 90°. Up to ``max_tries`` windows are
    drawn until one has a vessel fraction of at least ``min_vessel_fraction``.
    """

    scale_range: tuple[float, float] = (0.3, 1.0)
    min_vessel_fraction: float = 0.02
    max_tries: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise PAReconError(f"scale_range must be an increasing positive pair, got {self.scale_range}",
                               field="CropParams.scale_range")
        if self.max_tries < 1:
            raise PAReconError("max_tries must be >= 1", field="CropParams.max_tries")


class VesselMaskFolder:
    """The masks of one split (``"train"``, ``"val"`` or ``"all"``) of a DRIVE-like folder, held in memory."""

    def __init__(self, root: str | PathLike[str], *, split: str = "train", val_fraction: float = 0.2) -> None:
        self.root = Path(root)
        if split not in ("train", "val", "all"):
            raise PAReconError(f"split must be 'train', 'val' or 'all', got {split!r}", field="split")
        val_fraction = check_number(val_fraction, "val_fraction", minimum=0, below=1)
        all_files = find_mask_files(self.root)
        train, val = split_files(all_files, val_fraction)
        self.files: list[Path] = {"train": train, "val": val, "all": all_files}[split]
        if not self.files:
            raise PAReconError(f"the {split!r} split is empty ({len(all_files)} masks, val_fraction={val_fraction})",
                               file=self.root, field="split")
        self.masks: list[np.ndarray] = [_read_mask(f) for f in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def crop(self, nz: int, nx: int, rng: np.random.Generator, params: CropParams | None = None) -> np.ndarray:
        """One augmented crop, shape ``(nz, nx)`` float32 in ``[0, 1]`` (edges soft from the resize)."""
        from skimage.transform import resize  # skimage takes a second to import: only DRIVE crops need it

        params = params or CropParams()
        mask = self.masks[int(rng.integers(len(self.masks)))]
        quarter_turns = int(rng.integers(4))
        # Crop in the orientation before rotation, so the rotated result has shape (nz, nx).
        h, w = (nz, nx) if quarter_turns % 2 == 0 else (nx, nz)
        window = _random_window(mask, h, w, rng, params.scale_range)
        for _ in range(params.max_tries - 1):
            if window.mean() >= params.min_vessel_fraction:
                break
            window = _random_window(mask, h, w, rng, params.scale_range)
        image = resize(window.astype(np.float32), (h, w), order=1, anti_aliasing=True, preserve_range=True)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        if rng.random() < 0.5:
            image = image[::-1, :]
        image = np.rot90(image, quarter_turns)
        return np.clip(image, 0.0, 1.0).astype(np.float32)

    def crops(self, n: int, nz: int, nx: int, seed: int, params: CropParams | None = None) -> np.ndarray:
        """``n`` crops, shape ``(n, nz, nx)`` float32; crop ``i`` depends only on ``(seed, i)`` and the split."""
        out = np.empty((n, nz, nx), dtype=np.float32)
        for k in range(n):
            out[k] = self.crop(nz, nx, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k,))), params)
        return out


def find_mask_files(root: str | PathLike[str]) -> list[Path]:
    """Mask image files under ``root`` (in ``1st_manual`` folders if there are any), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise PAReconError("vessel-mask folder does not exist", file=root, field="root")
    annotation_dirs = sorted(p for p in root.rglob(_ANNOTATION_DIR) if p.is_dir())
    folders = annotation_dirs or [root]
    files = sorted(f for d in folders for f in d.iterdir() if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise PAReconError(f"no mask images ({', '.join(sorted(_IMAGE_SUFFIXES))}) found", file=root, field="root")
    return files


def split_files(files: Sequence[Path], val_fraction: float) -> tuple[list[Path], list[Path]]:
    """Deterministic ``(train, val)`` split of a file list; at least one validation file when the fraction is
    positive and there are two or more files."""
    files = sorted(files)
    n_val = int(round(len(files) * val_fraction))
    if val_fraction > 0 and len(files) > 1:
        n_val = min(max(n_val, 1), len(files) - 1)
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(files))
    val_idx = set(order[:n_val].tolist())
    train = [f for i, f in enumerate(files) if i not in val_idx]
    val = [f for i, f in enumerate(files) if i in val_idx]
    return train, val


def _read_mask(path: Path) -> np.ndarray:
    """A binary mask ``(H, W)`` bool from any PIL-readable image (colour images: any channel > 0)."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img)
    except (OSError, ValueError) as err:
        raise PAReconError(f"cannot read mask image: {err}", file=path, field="image") from None
    if array.ndim == 3:
        array = array.max(axis=-1)
    if array.ndim != 2 or min(array.shape) < 1:
        raise PAReconError(f"mask image has unexpected shape {array.shape}", file=path, field="image")
    return array > 0


def _random_window(mask: np.ndarray, h: int, w: int, rng: np.random.Generator,
                   scale_range: tuple[float, float]) -> np.ndarray:
    """A random ``(h/s, w/s)`` window of ``mask`` with ``s`` drawn from ``scale_range`` (raised so it fits)."""
    height, width = mask.shape
    scale = max(rng.uniform(*scale_range), h / height, w / width)
    wh = min(height, max(1, int(round(h / scale))))
    ww = min(width, max(1, int(round(w / scale))))
    top = int(rng.integers(height - wh + 1))
    left = int(rng.integers(width - ww + 1))
    return mask[top:top + wh, left:left + ww]
