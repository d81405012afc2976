"""Procedural vessel phantoms and block downsampling."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from pa_recon.data.families import make_phantoms
from pa_recon.data.phantoms import VesselParams, downsample, vessel_phantom, vessel_phantoms
from pa_recon.errors import PAReconError


def near_vertical_fraction(image: np.ndarray, max_angle: float = 15.0) -> float:
    """Fraction of vessel-edge pixels whose dominant gradient is within ``max_angle`` degrees of the x axis,
    i.e. whose vessel runs within that angle of vertical (structure-tensor orientation)."""
    gz, gx = np.gradient(image.astype(np.float64))
    jxx, jzz, jxz = (gaussian_filter(a, 1.5) for a in (gx * gx, gz * gz, gx * gz))
    angle = 0.5 * np.degrees(np.arctan2(2 * jxz, jxx - jzz))
    energy = jxx + jzz
    edges = (image > 0.1) & (energy > 0.05 * energy.max())
    return float((edges & (np.abs(angle) < max_angle)).sum() / max(edges.sum(), 1))


def test_near_vertical_measure_tells_bars_apart():
    bar = np.zeros((64, 64))
    bar[30:34] = 1.0
    assert near_vertical_fraction(bar) == 0.0
    assert near_vertical_fraction(bar.T) == 1.0


def test_same_seed_same_image_and_different_seed_differs():
    a = vessel_phantom(40, 56, np.random.default_rng(5))
    b = vessel_phantom(40, 56, np.random.default_rng(5))
    c = vessel_phantom(40, 56, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_family_is_indexed_by_seed_and_position():
    full = vessel_phantoms(5, 32, 32, seed=11)
    np.testing.assert_array_equal(vessel_phantoms(3, 32, 32, seed=11), full[:3])
    np.testing.assert_array_equal(vessel_phantoms(2, 32, 32, seed=11, start=3), full[3:])
    assert not np.array_equal(full[0], full[1])


@pytest.mark.parametrize("shape", [(64, 64), (48, 80), (17, 9)])
def test_shape_dtype_and_range(shape):
    images = vessel_phantoms(4, *shape, seed=0)
    assert images.shape == (4, *shape)
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert (images > 0).any(axis=(1, 2)).all(), "every phantom holds vessels"
    assert (images == 0).mean() > 0.3, "vessels are sparse on a zero background"


def test_vessels_differ_in_intensity_and_have_a_smooth_profile():
    image = vessel_phantoms(1, 96, 96, seed=3)[0]
    vessel_values = image[image > 0]
    # Several brightness levels (one peak per vessel) and intermediate values across each vessel.
    assert np.unique(np.round(vessel_values, 2)).size > 20
    assert ((vessel_values > 0.05) & (vessel_values < 0.9 * vessel_values.max())).mean() > 0.3


def test_near_vertical_vessels_present_and_controlled_by_vertical_fraction():
    family = vessel_phantoms(12, 96, 96, seed=0)
    fractions = np.array([near_vertical_fraction(img) for img in family])
    assert (fractions > 0.05).sum() >= 9

    def mean_vertical(vertical_fraction: float) -> float:
        images = vessel_phantoms(12, 96, 96, seed=0, params=VesselParams(vertical_fraction=vertical_fraction))
        return float(np.mean([near_vertical_fraction(img) for img in images]))

    assert mean_vertical(1.0) > mean_vertical(0.0) + 0.07


def test_density_and_thickness_change_vessel_fraction():
    def vessel_fraction(params: VesselParams) -> float:
        return float((vessel_phantoms(8, 64, 64, seed=3, params=params) > 0.1).mean())

    base = vessel_fraction(VesselParams())
    assert vessel_fraction(VesselParams(density=2.0)) > 1.5 * base
    assert vessel_fraction(VesselParams(thickness=0.5)) < 0.85 * base


def test_invalid_params_are_rejected():
    with pytest.raises(PAReconError, match="density"):
        VesselParams(density=0.0)
    with pytest.raises(PAReconError, match="shape"):
        vessel_phantom(0, 8, np.random.default_rng(0))


def test_settings_from_a_params_mapping_get_their_defaults_types():
    params = VesselParams.from_dict({"n_trees": [1, 3], "density": 2, "max_depth": 2})
    assert params == VesselParams(n_trees=(1, 3), density=2.0, max_depth=2)
    assert isinstance(params.density, float) and isinstance(params.n_trees, tuple)


@pytest.mark.parametrize("values, field, message", [
    ({"densty": 2}, None, "unknown settings ['densty']; known: ['bend', "),
    ([("density", 2)], None, "expected a mapping"),
    ({"density": "2"}, "density", "must be a finite number, got '2'"),
    ({"density": float("nan")}, "density", "must be a finite number, got nan"),
    ({"thickness": True}, "thickness", "must be a finite number, got True"),
    ({"max_depth": 2.0}, "max_depth", "must be an integer, got 2.0"),
    ({"n_trees": 3}, "n_trees", "must be a list of 2 numbers, got 3"),
    ({"intensity": [0.2, 0.5, 0.9]}, "intensity", "must be a list of 2 numbers"),
    ({"bend": -1}, "bend", "bend must be >= 0"),
])
def test_a_wrong_setting_is_named(values, field, message):
    with pytest.raises(PAReconError) as info:
        VesselParams.from_dict(values)
    assert info.value.field == field and info.value.message.startswith(message)


def test_a_family_names_its_wrong_vessel_settings_for_every_source():
    for source in ("procedural", "vessel_masks"):
        with pytest.raises(PAReconError) as info:
            make_phantoms(1, 8, 8, 0, source=source, vessels={"density": "2"})
        assert str(info.value) == "vessels.density: must be a finite number, got '2'"
    with pytest.raises(PAReconError, match=r"^vessels: unknown settings \['densty'\]"):
        make_phantoms(1, 8, 8, 0, vessels={"densty": 2})


def test_downsample_is_the_block_mean():
    image = np.arange(16, dtype=np.float64).reshape(4, 4)
    np.testing.assert_array_equal(downsample(image, 2), [[2.5, 4.5], [10.5, 12.5]])
    batch = np.stack([image, 2 * image]).astype(np.float32)[:, None]
    out = downsample(batch, 2)
    assert out.shape == (2, 1, 2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1, 0], [[5.0, 9.0], [21.0, 25.0]])
    np.testing.assert_array_equal(downsample(image, 1), image)
    assert downsample(image, 4).item() == image.mean()


def test_downsample_rejects_indivisible_shapes():
    with pytest.raises(PAReconError, match="divisible"):
        downsample(np.zeros((6, 4)), 4)
