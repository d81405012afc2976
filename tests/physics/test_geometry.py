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
     ({"center_frequency": -5e6}, "array.center_frequency"),
     ({"n_samples": 20.5}, "array.n_samples"), ({"n_samples": 20.0}, "array.n_samples"),
     ({"n_samples": True}, "array.n_samples"), ({"fs": float("inf")}, "array.fs"), ({"fs": "1e6"}, "array.fs"),
     ({"fs": None}, "array.fs"), ({"sound_speed": float("nan")}, "array.sound_speed"),
     ({"t0": float("inf")}, "array.t0"), ({"z_array": float("-inf")}, "array.z_array"),
     ({"z_array": "0"}, "array.z_array"), ({"element_width": float("inf")}, "array.element_width"),
     ({"center_frequency": float("inf")}, "array.center_frequency"),
     ({"fractional_bandwidth": 0.0}, "array.fractional_bandwidth"),
     ({"fractional_bandwidth": float("nan")}, "array.fractional_bandwidth"),
     ({"element_x": ()}, "array.element_x"), ({"element_x": (0.0, float("nan"))}, "array.element_x"),
     ({"element_x": ("a", "b")}, "array.element_x")],
)
def test_bad_array_settings_name_the_field(kwargs, field):
    """The same check whether built directly or from a plain dict (an HDF5 file's attributes)."""
    settings = {"element_x": (0.0, 1e-4), "fs": 1e6, "n_samples": 4} | kwargs
    with pytest.raises(PAReconError) as err:
        LinearArray(**settings)
    assert err.value.field == field
    with pytest.raises(PAReconError) as err:
        LinearArray.from_dict(settings)
    assert err.value.field == field


@pytest.mark.parametrize(("kwargs", "field", "message"), [
    ({"n_samples": 20.5}, "array.n_samples", "must be an integer >= 1, got 20.5"),
    ({"n_samples": 0}, "array.n_samples", "must be an integer >= 1, got 0"),
    ({"fs": float("inf")}, "array.fs", "must be a finite number > 0, got inf"),
    ({"fs": "30e6"}, "array.fs", "must be a finite number > 0, got '30e6'"),
    ({"fs": -1.0}, "array.fs", "must be a finite number > 0, got -1.0"),
    ({"t0": -1e-6}, "array.t0", "must be a finite number >= 0, got -1e-06"),
    ({"n_elements": 4.5}, "array.n_elements", "must be an integer >= 1, got 4.5"),
    ({"n_elements": 0}, "array.n_elements", "must be an integer >= 1, got 0"),
    ({"pitch": 0.0}, "array.pitch", "must be a finite number > 0, got 0.0"),
    ({"pitch": float("nan")}, "array.pitch", "must be a finite number > 0, got nan"),
    ({"pitch": "1e-4"}, "array.pitch", "must be a finite number > 0, got '1e-4'")])
def test_bad_uniform_array_settings_name_the_field(kwargs, field, message):
    settings = {"n_elements": 4, "pitch": 1e-4, "fs": 30e6, "n_samples": 20} | kwargs
    with pytest.raises(PAReconError) as err:
        LinearArray.uniform(**settings)
    assert (err.value.field, err.value.message) == (field, message)


def test_valid_edge_values_are_still_accepted():
    """t0 = 0, a negative or zero z_array, point elements, an ideal sensor (None, or 0 in a dict)."""
    a = LinearArray.uniform(1, 1e-4, fs=30e6, n_samples=1, t0=0.0, z_array=-1e-3, element_width=0.0)
    assert a.center_frequency is None and a.z_array == -1e-3
    assert LinearArray.from_dict(a.to_dict()) == a
    assert LinearArray.from_dict(a.to_dict() | {"center_frequency": None}) == a


@pytest.mark.parametrize(("nx", "nz", "dx", "field", "message"), [
    (4, 4, 0.0, "grid.dx", "must be a finite number > 0, got 0.0"),
    (4, 4, -1e-4, "grid.dx", "must be a finite number > 0, got -0.0001"),
    (0, 4, 1e-4, "grid.nx", "must be an integer >= 1, got 0"),
    (4, 0, 1e-4, "grid.nz", "must be an integer >= 1, got 0"),
    (64.5, 64, 1e-4, "grid.nx", "must be an integer >= 1, got 64.5"),
    (4, 64.0, 1e-4, "grid.nz", "must be an integer >= 1, got 64.0"),
    (True, 4, 1e-4, "grid.nx", "must be an integer >= 1, got True"),
    ("4", 4, 1e-4, "grid.nx", "must be an integer >= 1, got '4'"),
    (4, 4, float("inf"), "grid.dx", "must be a finite number > 0, got inf"),
    (4, 4, float("nan"), "grid.dx", "must be a finite number > 0, got nan"),
    (4, 4, "1e-4", "grid.dx", "must be a finite number > 0, got '1e-4'"),
    (4, 4, None, "grid.dx", "must be a finite number > 0, got None"),
    (4, 4, True, "grid.dx", "must be a finite number > 0, got True")])
def test_bad_grid_names_the_field(nx, nz, dx, field, message):
    with pytest.raises(PAReconError) as err:
        Grid(nx=nx, nz=nz, dx=dx)
    assert (err.value.field, err.value.message) == (field, message)


@pytest.mark.parametrize(("values", "field", "message"), [
    ({"nx": 64.5}, "grid.nx", "must be an integer >= 1, got 64.5"),
    ({"nz": 3.9}, "grid.nz", "must be an integer >= 1, got 3.9"),
    ({"dx": "abc"}, "grid.dx", "must be a finite number > 0, got 'abc'"),
    ({"dx": float("inf")}, "grid.dx", "must be a finite number > 0, got inf")])
def test_grid_from_dict_refuses_instead_of_truncating(values, field, message):
    with pytest.raises(PAReconError) as err:
        Grid.from_dict({"nx": 4, "nz": 4, "dx": 1e-4} | values)
    assert (err.value.field, err.value.message) == (field, message)


@pytest.mark.parametrize("factor", [1.5, 2.0, 0, True])
def test_bad_refinement_factor_names_the_field(factor):
    with pytest.raises(PAReconError) as err:
        Grid(nx=4, nz=4, dx=1e-4).refined(factor)
    assert (err.value.field, err.value.message) == ("factor", f"must be an integer >= 1, got {factor!r}")


def test_numpy_values_are_accepted_and_stored_as_python_numbers():
    """HDF5 attributes and numpy arithmetic deliver numpy scalars: they are valid and equal their Python values."""
    g = Grid(nx=np.int64(3), nz=np.int32(5), dx=np.float64(2e-4))
    assert g == Grid(nx=3, nz=5, dx=2e-4) and hash(g) == hash(Grid(nx=3, nz=5, dx=2e-4))
    assert type(g.nx) is int and type(g.nz) is int and type(g.dx) is float
    assert Grid.from_dict({"nx": np.int64(3), "nz": np.int64(5), "dx": np.float64(2e-4)}) == g
    a = LinearArray.uniform(np.int64(3), np.float64(2e-4), fs=np.float64(20e6), n_samples=np.int64(7),
                            center_frequency=np.float32(4e6))
    assert type(a.n_samples) is int and type(a.fs) is float and a.n_samples == 7
    d = a.to_dict() | {"n_samples": np.int64(7), "fs": np.float64(20e6), "center_frequency": np.float64(0.0)}
    assert LinearArray.from_dict(d).center_frequency is None
    np.testing.assert_array_equal(LinearArray.from_dict(d).positions(), a.positions())
