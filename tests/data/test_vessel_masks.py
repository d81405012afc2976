"""Vessel-mask folder loader, on a small fake folder with DRIVE's layout (no shared data needed)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pa_recon.data.families import make_phantoms
from pa_recon.data.phantoms import VesselParams, vessel_phantoms
from pa_recon.data.vessel_masks import CropParams, VesselMaskFolder, find_mask_files, split_files
from pa_recon.errors import PAReconError


def vessel_mask(seed: int, shape: tuple[int, int] = (90, 70)) -> np.ndarray:
    """A binary mask of a few straight random lines, 3 px wide."""
    rng = np.random.default_rng(seed)
    zz, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for _ in range(4):
        angle = rng.uniform(0, np.pi)
        z0, x0 = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        mask |= np.abs((zz - z0) * np.cos(angle) - (xx - x0) * np.sin(angle)) < 1.5
    return mask


@pytest.fixture
def drive_like(tmp_path: Path) -> Path:
    """``training/{1st_manual,mask,images}`` with GIFs of 0/255 and ``test/1st_manual`` with palette-index GIFs
    of 0/1, as in DRIVE."""
    train = tmp_path / "training"
    for sub in ("1st_manual", "mask", "images"):
        (train / sub).mkdir(parents=True)
    for k in range(21, 26):
        mask = vessel_mask(k)
        Image.fromarray(mask.astype(np.uint8) * 255).save(train / "1st_manual" / f"{k}_manual1.gif")
        Image.fromarray(np.full(mask.shape, 255, np.uint8)).save(train / "mask" / f"{k}_training_mask.gif")
        Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(train / "images" / f"{k}_training.png")
    (tmp_path / "test" / "1st_manual").mkdir(parents=True)
    palette = Image.fromarray(vessel_mask(1).astype(np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.save(tmp_path / "test" / "1st_manual" / "01_manual1.gif")
    return tmp_path


def test_finds_only_manual_annotations(drive_like):
    files = find_mask_files(drive_like)
    assert [f.name for f in files] == ["01_manual1.gif"] + [f"{k}_manual1.gif" for k in range(21, 26)]


def test_palette_and_255_gifs_read_as_the_same_binary_mask(drive_like):
    masks = VesselMaskFolder(drive_like, split="all")
    by_name = dict(zip([f.name for f in masks.files], masks.masks))
    np.testing.assert_array_equal(by_name["01_manual1.gif"], vessel_mask(1))
    np.testing.assert_array_equal(by_name["21_manual1.gif"], vessel_mask(21))


def test_split_is_disjoint_complete_and_deterministic(drive_like):
    train = VesselMaskFolder(drive_like, split="train", val_fraction=0.34)
    val = VesselMaskFolder(drive_like, split="val", val_fraction=0.34)
    assert len(val) == 2 and len(train) == 4
    assert not set(train.files) & set(val.files)
    assert sorted(train.files + val.files) == find_mask_files(drive_like)
    assert VesselMaskFolder(drive_like, split="val", val_fraction=0.34).files == val.files
    # The split depends on the file list only, not on its order.
    files = find_mask_files(drive_like)
    assert split_files(files[::-1], 0.34) == split_files(files, 0.34)


def test_crops_shape_range_and_seed(drive_like):
    masks = VesselMaskFolder(drive_like)
    crops = masks.crops(12, 32, 24, seed=4)
    assert crops.shape == (12, 32, 24) and crops.dtype == np.float32
    assert crops.min() >= 0.0 and crops.max() <= 1.0
    assert (crops.mean(axis=(1, 2)) > 0).all()
    np.testing.assert_array_equal(crops, masks.crops(12, 32, 24, seed=4))
    assert not np.array_equal(crops, masks.crops(12, 32, 24, seed=5))


def test_full_scale_crop_without_augmentation_is_a_window_of_a_mask(drive_like):
    masks = VesselMaskFolder(drive_like, split="all")
    rng = np.random.default_rng(0)
    for _ in range(5):
        crop = masks.crop(20, 20, rng, CropParams(scale_range=(1.0, 1.0)))
        # At scale 1 the crop is binary and, up to flips and quarter turns, a window of one of the masks.
        assert set(np.unique(crop)) <= {0.0, 1.0}
        variants = [np.rot90(c, k) for c in (crop, crop[::-1], crop[:, ::-1], crop[::-1, ::-1]) for k in range(4)]
        assert any(_is_window(v.astype(bool), m) for v in variants for m in masks.masks)


def _is_window(window: np.ndarray, mask: np.ndarray) -> bool:
    windows = np.lib.stride_tricks.sliding_window_view(mask, window.shape)
    return bool((windows == window).all(axis=(-2, -1)).any())


def test_crop_larger_than_masks_is_upscaled(drive_like):
    masks = VesselMaskFolder(drive_like)
    crops = masks.crops(6, 200, 150, seed=0)
    assert crops.shape == (6, 200, 150) and 0.0 <= crops.min() and crops.max() <= 1.0
    # Each crop is (nearly) a whole 90 × 70 mask resized, so it keeps that mask's vessel fraction (0.13–0.16);
    # padding the mask to 200 × 150 would cut the fraction to about a fifth.
    fractions = np.array([m.mean() for m in masks.masks])
    for crop in crops:
        assert np.abs(fractions - crop.mean()).min() < 0.01


def test_missing_or_empty_folder_names_the_path(tmp_path):
    with pytest.raises(PAReconError, match="does not exist") as err:
        VesselMaskFolder(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PAReconError, match="no mask images") as err:
        VesselMaskFolder(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)


def test_families_dispatch_to_procedural_and_mask_sources(drive_like):
    np.testing.assert_array_equal(make_phantoms(2, 24, 20, 3, vessels={"density": 1.5}),
                                  vessel_phantoms(2, 24, 20, 3, VesselParams(density=1.5)))
    np.testing.assert_array_equal(make_phantoms(2, 24, 20, 3, source="vessel_masks", mask_dir=drive_like, split="all"),
                                  VesselMaskFolder(drive_like, split="all").crops(2, 24, 20, 3))
    with pytest.raises(PAReconError, match="mask_dir"):
        make_phantoms(1, 8, 8, 0, source="vessel_masks")
    with pytest.raises(PAReconError, match="source"):
        make_phantoms(1, 8, 8, 0, source="mri")
