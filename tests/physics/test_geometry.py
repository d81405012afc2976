import numpy as np
import pytest

from pa_recon.errors import PAReconError
from pa_recon.physics.geometry import Grid, LinearArray


def test_pixel_centres_follow_the_documented_convention():
    g = Grid(nx=4, nz=3, dx=0.5e-3)
    np.testing.assert_allclose(g.x(), [-0.75e-3, -0.25e-3, 0.25e-3, 0.75e-3])
    np.testing.assert_allclose(g.z(), [0.25e-3, 0.75e-3, 1.25e-3])


def test_refined_grid_pixels_average_to_the_coarse_centres():
    g = Grid(nx=5, nz=4, dx=1e-4)
    f = g.refined(2)
    np.testing.assert_allclose(f.x().reshape(-1, 2).mean(axis=1), g.x(), atol=1e-15)
    np.testing.assert_allclose(f.z().reshape(-1, 2).mean(axis=1), g.z(), atol=1e-15)


def test_uniform_array_is_centred_and_times_are_uniform():
    a = LinearArray.uniform(4, 1e-4, fs=10e6, n_samples=3, t0=1e-6)
    np.testing.assert_allclose(a.positions(), [-1.5e-4, -0.5e-4, 0.5e-4, 1.5e-4])
    np.testing.assert_allclose(a.times(), [1e-6, 1.1e-6, 1.2e-6])
    assert a.n_elements == 4


def test_band_pass_response_has_its_half_power_points_at_the_stated_bandwidth():
    a = LinearArray.uniform(2, 1e-4, fs=30e6, n_samples=4, center_frequency=5e6, fractional_bandwidth=0.8)
    h = a.frequency_response(np.array([5e6, 5e6 - 2e6, 5e6 + 2e6]))
    np.testing.assert_allclose(h**2, [1.0, 0.5, 0.5], rtol=1e-12)
    ideal = LinearArray.uniform(2, 1e-4, fs=30e6, n_samples=4)
    np.testing.assert_array_equal(ideal.frequency_response(np.array([0.0, 1e7])), [1.0, 1.0])


def test_round_trip_through_plain_dicts():
    a = LinearArray.uniform(3, 2e-4, fs=20e6, n_samples=7, t0=1e-7, z_array=-1e-4, element_width=1e-4,
                            center_frequency=4e6, fractional_bandwidth=0.6, sound_speed=1540.0)
    assert LinearArray.from_dict(a.to_dict()) == a
    g = Grid(nx=3, nz=5, dx=2e-4)
    assert Grid.from_dict(g.to_dict()) == g


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"fs": 0.0}, "array.fs"), ({"n_samples": 0}, "array.n_samples"), ({"sound_speed": -1.0}, "array.sound_speed"),
     ({"element_width": -1e-4}, "array.element_width"), ({"t0": -1.0}, "array.t0"),
     ({"center_frequency": -5e6}, "array.center_frequency")],
)
def test_bad_array_settings_name_the_field(kwargs, field):
    settings = {"element_x": (0.0, 1e-4), "fs": 1e6, "n_samples": 4} | kwargs
    with pytest.raises(PAReconError) as err:
        LinearArray(**settings)
    assert err.value.field == field


@pytest.mark.parametrize(("nx", "nz", "dx", "field"), [
    (4, 4, 0.0, "grid.dx"), (4, 4, -1e-4, "grid.dx"), (0, 4, 1e-4, "grid"), (4, 0, 1e-4, "grid")])
def test_bad_grid_names_the_field(nx, nz, dx, field):
    with pytest.raises(PAReconError) as err:
        Grid(nx=nx, nz=nz, dx=dx)
    assert err.value.field == field
