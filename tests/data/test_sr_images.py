"""SR image folders, MATLAB-convention bicubic resizing (hand-computed cases, exactness properties) and the
training patch sampler."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pa_recon.data.sr_images import (
    PatchSampler,
    cubic,
    downscale,
    imresize,
    is_greyscale,
    list_images,
    modcrop,
    read_image,
    read_image_folder,
    resize_matrix,
    to_uint8,
    upscale,
)
from pa_recon.errors import PAReconError

RNG = np.random.default_rng(1)


def test_folder_listing_reading_and_grey_conversion(tmp_path):
    rgb = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    grey = RNG.integers(0, 256, size=(4, 6), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "b.png")
    Image.fromarray(grey).save(tmp_path / "a.BMP")
    Image.fromarray(np.dstack([rgb, np.zeros((5, 7), np.uint8)])).save(tmp_path / "c.png")
    (tmp_path / "README.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["a.BMP", "b.png", "c.png"]
    images = read_image_folder(tmp_path)
    assert list(images) == ["a", "b", "c"]
    assert images["a"].shape == (4, 6, 3) and images["a"].dtype == np.uint8
    np.testing.assert_array_equal(images["a"], np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(images["b"], rgb)
    np.testing.assert_array_equal(images["c"], rgb)  # alpha dropped
    assert is_greyscale(tmp_path / "a.BMP") and not is_greyscale(tmp_path / "b.png")


def test_folder_and_file_errors(tmp_path):
    with pytest.raises(PAReconError, match="not found"):
        list_images(tmp_path / "missing")
    with pytest.raises(PAReconError, match="no image files"):
        list_images(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(PAReconError, match="cannot read image") as info:
        read_image(tmp_path / "broken.png")
    assert info.value.file == str(tmp_path / "broken.png")
    with pytest.raises(PAReconError, match="cannot read image"):
        is_greyscale(tmp_path / "missing.png")


def test_modcrop_and_to_uint8():
    img = np.zeros((13, 10, 3))
    assert modcrop(img, 4).shape == (12, 8, 3) and modcrop(img[..., 0], 3).shape == (12, 9)
    assert np.shares_memory(modcrop(img, 4), img)
    with pytest.raises(PAReconError):
        modcrop(img, 0)
    # round(255·x), halves up, clipped: 0.5/255 → 1, just below → 0.
    x = np.array([-0.1, 0.0, 0.5 / 255, 0.49 / 255, 254.5 / 255, 1.0, 1.2])
    np.testing.assert_array_equal(to_uint8(x), [0, 0, 1, 0, 255, 255, 255])


def test_cubic_kernel_values():
    x = np.array([0.0, 0.5, -0.5, 1.0, 1.5, -1.5, 2.0, 2.5])
    np.testing.assert_allclose(cubic(x), [1.0, 0.5625, 0.5625, 0.0, -0.0625, -0.0625, 0.0, 0.0], atol=1e-15)


def test_hand_computed_upscale_of_an_impulse():
    # ×2: output x samples u = x/2 + 0.25 = 0.75, 1.25, … 6.25; an impulse at pixel 3 gives cubic(u − 3), and
    # no mirrored copy of it (at −2 or 10) is within reach of the kernel.
    signal = np.zeros((6, 1))
    signal[2] = 1.0
    expected = [0, -0.0234375, -0.0703125, 0.2265625, 0.8671875, 0.8671875, 0.2265625, -0.0703125, -0.0234375,
                0, 0, 0]
    np.testing.assert_allclose(imresize(signal, 2)[:, 0], expected, atol=1e-15)


def test_hand_computed_antialiased_downscale():
    # ×1/2 of [1, 0, 0, 0]: u = 1.5 for output 1; the stretched kernel cubic(d/2) at d = ±0.5, ±1.5, ±2.5, ±3.5
    # gives 0.8671875, 0.2265625, −0.0703125, −0.0234375 (sum 2); input positions −2…5 fold back to
    # 3, 2, 1, 1, 2, 3, 4, 4, so output 1 = (0.2265625 + 0.8671875)/2 = 0.546875 and output 2 = −0.046875.
    img = np.zeros((4, 4))
    img[0] = 1.0
    np.testing.assert_allclose(downscale(img, 2), np.array([[0.546875] * 2, [-0.046875] * 2]), atol=1e-15)


@pytest.mark.parametrize("scale", [4.0, 3.0, 1.5, 0.7, 1 / 3, 0.25])
def test_constant_image_stays_constant(scale):
    out = imresize(np.full((24, 18, 3), 0.3), scale)
    assert out.shape == (int(np.ceil(24 * scale - 1e-9)), int(np.ceil(18 * scale - 1e-9)), 3)
    np.testing.assert_allclose(out, 0.3, atol=1e-14)


@pytest.mark.parametrize("in_len, out_len, scale", [(10, 40, 4.0), (40, 10, 0.25), (9, 3, 1 / 3), (7, 5, 0.7)])
def test_resize_weights_sum_to_one(in_len, out_len, scale):
    np.testing.assert_allclose(resize_matrix(in_len, out_len, scale).sum(axis=1), 1.0, atol=1e-14)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_linear_ramp_is_reproduced_away_from_the_borders(factor):
    # A plane a·i + b·j (pixel centres i, j = 1, 2, …) is sampled exactly at u = x/s + 0.5(1 − 1/s) once the
    # kernel no longer reaches the mirrored border; the antialiased downscale is exact too (symmetric taps).
    i, j = np.meshgrid(np.arange(1, 31), np.arange(1, 25), indexing="ij")
    plane = 0.7 * i - 0.3 * j
    up = upscale(plane, factor)
    ui = np.arange(1, 30 * factor + 1) / factor + 0.5 * (1 - 1 / factor)
    uj = np.arange(1, 24 * factor + 1) / factor + 0.5 * (1 - 1 / factor)
    m = 2 * factor
    np.testing.assert_allclose(up[m:-m, m:-m], (0.7 * ui[:, None] - 0.3 * uj[None, :])[m:-m, m:-m], atol=1e-12)
    assert np.abs(up - (0.7 * ui[:, None] - 0.3 * uj[None, :])).max() > 1e-3  # the borders do differ
    plane = plane[: 30 - 30 % factor, : 24 - 24 % factor]
    down = downscale(plane, factor)
    di = factor * np.arange(1, down.shape[0] + 1) - (factor - 1) / 2
    dj = factor * np.arange(1, down.shape[1] + 1) - (factor - 1) / 2
    np.testing.assert_allclose(down[2:-2, 2:-2], (0.7 * di[:, None] - 0.3 * dj[None, :])[2:-2, 2:-2], atol=1e-12)


def test_shapes_channels_and_symmetries():
    img = RNG.random((24, 36, 3))
    down = downscale(img, 4)
    assert down.shape == (6, 9, 3) and down.dtype == np.float64 and upscale(down, 4).shape == (24, 36, 3)
    np.testing.assert_allclose(down[..., 1], downscale(img[..., 1], 4), atol=1e-14)
    # Flips and transposition commute with the ×1/4 resize of a modcropped image (used by the patch sampler).
    np.testing.assert_allclose(downscale(img[::-1, ::-1], 4), down[::-1, ::-1], atol=1e-14)
    np.testing.assert_allclose(downscale(img.transpose(1, 0, 2), 4), down.transpose(1, 0, 2), atol=1e-14)
    assert imresize(np.zeros((255, 10)), 1 / 3).shape == (85, 4)
    with pytest.raises(PAReconError, match="modcrop"):
        downscale(img[:23], 4)
    with pytest.raises(PAReconError, match="expected an image"):
        upscale(np.zeros(5), 2)
    with pytest.raises(PAReconError, match="scale"):
        imresize(img, 0.0)


def _find(patch: np.ndarray, image: np.ndarray, step: int) -> tuple[int, int] | None:
    """Top-left corner (multiple of ``step``) where ``patch`` occurs in ``image``, if anywhere."""
    p = patch.shape[0]
    for i in range(0, image.shape[0] - p + 1, step):
        for j in range(0, image.shape[1] - p + 1, step):
            if np.array_equal(image[i : i + p, j : j + p], patch):
                return i, j
    return None


def test_patch_sampler_pairs_are_aligned_with_the_protocol_lr():
    images = [RNG.integers(0, 256, size=(26, 22, 3), dtype=np.uint8), RNG.integers(0, 256, (5, 40, 3), np.uint8)]
    sampler = PatchSampler(images, scale=2, patch_size=8, seed=3, augment=False)
    assert sampler.skipped == [1]
    hr, lr = sampler.sample(6)
    assert hr.shape == (6, 3, 8, 8) and lr.shape == (6, 3, 4, 4) and hr.dtype == lr.dtype == np.uint8
    full_lr = to_uint8(downscale(modcrop(images[0], 2) / 255.0, 2))
    for hr_patch, lr_patch in zip(hr.transpose(0, 2, 3, 1), lr.transpose(0, 2, 3, 1)):
        corner = _find(hr_patch, images[0], step=2)
        assert corner is not None
        i, j = corner[0] // 2, corner[1] // 2
        np.testing.assert_array_equal(lr_patch, full_lr[i : i + 4, j : j + 4])


def _undo(patch: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """Inverse of "rotate by turns × 90° counter-clockwise, then mirror left-right if flip"."""
    return np.rot90(patch[:, ::-1] if flip else patch, -turns)


def test_patch_sampler_augmentation_keeps_pairs_consistent():
    image = RNG.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
    full_lr = to_uint8(downscale(image / 255.0, 2))
    hr, lr = PatchSampler([image], scale=2, patch_size=6, seed=0).sample(24)
    transforms_seen = set()
    for hr_patch, lr_patch in zip(hr.transpose(0, 2, 3, 1), lr.transpose(0, 2, 3, 1)):
        matches = []
        for turns in range(4):
            for flip in (False, True):
                corner = _find(_undo(hr_patch, turns, flip), image, step=2)
                if corner is not None:
                    i, j = corner[0] // 2, corner[1] // 2
                    np.testing.assert_array_equal(_undo(lr_patch, turns, flip), full_lr[i : i + 3, j : j + 3])
                    matches.append((turns, flip))
        assert matches, "an HR patch is not a flipped/rotated crop of the image"
        transforms_seen.add(matches[0])
    assert len(transforms_seen) > 3


def test_patch_sampler_is_reproducible():
    images = [RNG.integers(0, 256, size=(30, 26, 3), dtype=np.uint8) for _ in range(3)]
    first = PatchSampler(images, scale=4, patch_size=8, seed=7).sample(5)
    again = PatchSampler(images, scale=4, patch_size=8, seed=7).sample(5)
    other = PatchSampler(images, scale=4, patch_size=8, seed=8).sample(5)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    sampler = PatchSampler(images, scale=4, patch_size=8, seed=7)
    assert not np.array_equal(sampler.sample(5)[0], sampler.sample(5)[0])  # the stream moves on


def test_patch_sampler_errors():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(PAReconError, match="multiple of the scale") as info:
        PatchSampler([image], scale=4, patch_size=6)
    assert info.value.field == "patch_size"
    with pytest.raises(PAReconError, match="no image is at least"):
        PatchSampler([image], scale=2, patch_size=16)
    with pytest.raises(PAReconError, match="uint8 RGB") as info:
        PatchSampler([image, image[..., 0]], scale=2, patch_size=4)
    assert info.value.field == "images[1]"
