"""IPASC import, against files written with exactly PACFISH's HDF5 layout (see ipasc_fixture.py)."""

import h5py
import numpy as np
import pytest
from ipasc_fixture import line_positions, write_pacfish_file

from pa_recon.data.ipasc import import_ipasc
from pa_recon.errors import PAReconError
from pa_recon.physics.geometry import LinearArray

GRID = {"nx": 16, "nz": 16, "dx": 1e-4}


def test_linear_array_along_x1(tmp_path):
    data = np.random.default_rng(0).normal(size=(5, 30, 2, 3))
    path = write_pacfish_file(tmp_path / "scan.hdf5", data, line_positions(5, 3e-4), fs=50e6, speed_of_sound=1480.0)
    measured, array = import_ipasc(path, grid=GRID)
    assert measured.shape == (3, 5, 30) and measured.dtype == np.float64
    for scan in range(3):
        np.testing.assert_array_equal(measured[scan], data[:, :, 0, scan])
    np.testing.assert_allclose(array["element_x"], (np.arange(5) - 2) * 3e-4, atol=1e-15)
    assert array["fs"] == 50e6 and array["sound_speed"] == 1480.0 and array["n_samples"] == 30
    assert array["t0"] == 0.0 and array["z_array"] == 0.0 and array["center_frequency"] == 0.0
    assert array["element_width"] == pytest.approx(2.5e-4)
    assert LinearArray.from_dict(array).n_elements == 5


def test_second_wavelength_and_array_along_x2_above_the_tissue(tmp_path):
    data = np.random.default_rng(1).normal(size=(4, 12, 2, 1)).astype(np.float32)
    positions = line_positions(4, 2e-4, axis=1, depth=-1e-3) + [0.0, 5e-3, 0.0]
    path = write_pacfish_file(tmp_path / "scan.hdf5", data, positions)
    measured, array = import_ipasc(path, grid=GRID, wavelength_index=1)
    assert measured.dtype == np.float32
    np.testing.assert_array_equal(measured[0], data[:, :, 1, 0])
    np.testing.assert_allclose(array["element_x"], (np.arange(4) - 1.5) * 2e-4, atol=1e-15)
    assert array["z_array"] == pytest.approx(-1e-3)
    # The CUBOID extent along x2 (the array direction) is the element width.
    assert array["element_width"] == pytest.approx(4e-3)
    _, uncentred = import_ipasc(path, grid=GRID, wavelength_index=1, center=False)
    np.testing.assert_allclose(uncentred["element_x"], 5e-3 + np.arange(4) * 2e-4)


def test_two_dimensional_time_series_is_one_scan(tmp_path):
    data = np.arange(3 * 8, dtype=np.int16).reshape(3, 8)
    path = write_pacfish_file(tmp_path / "scan.hdf5", data, line_positions(3, 3e-4))
    measured, _ = import_ipasc(path, grid=GRID)
    assert measured.shape == (1, 3, 8) and measured.dtype == np.float32
    np.testing.assert_array_equal(measured[0], data)


def test_detectors_are_ordered_by_their_number(tmp_path):
    n = 12
    data = np.arange(n, dtype=np.float64)[:, None, None, None] * np.ones((n, 4, 1, 1))
    ids = [f"detection_element_{k}" for k in range(n)]
    path = write_pacfish_file(tmp_path / "scan.hdf5", data, line_positions(n, 1e-4), detector_ids=ids)
    measured, array = import_ipasc(path, grid=GRID)
    assert np.all(np.diff(array["element_x"]) > 0)
    np.testing.assert_array_equal(measured[0, :, 0], np.arange(n))


def test_non_linear_geometry_is_rejected(tmp_path):
    angles = np.linspace(0, np.pi / 2, 6)
    arc = np.stack([1e-2 * np.cos(angles), np.zeros(6), -1e-2 * np.sin(angles)], axis=1)
    path = write_pacfish_file(tmp_path / "arc.hdf5", np.zeros((6, 10, 1, 1)), arc)
    with pytest.raises(PAReconError, match="only linear arrays") as err:
        import_ipasc(path, grid=GRID)
    assert err.value.file == str(path) and err.value.field.endswith("/detector_position")


def test_tilted_line_is_rejected(tmp_path):
    tilted = line_positions(4, 3e-4)
    tilted[:, 2] = -np.arange(4) * 1e-4
    path = write_pacfish_file(tmp_path / "tilted.hdf5", np.zeros((4, 10, 1, 1)), tilted)
    with pytest.raises(PAReconError, match="tilted in depth"):
        import_ipasc(path, grid=GRID)


def test_array_inside_the_grid_is_rejected(tmp_path):
    path = write_pacfish_file(tmp_path / "deep.hdf5", np.zeros((3, 10, 1, 1)), line_positions(3, 3e-4, depth=1e-3))
    with pytest.raises(PAReconError, match="inside the image grid"):
        import_ipasc(path, grid=GRID)


def test_speed_of_sound_missing_null_or_overridden(tmp_path):
    for value in (None, "None"):
        path = write_pacfish_file(tmp_path / "c.hdf5", np.zeros((3, 10, 1, 1)), line_positions(3, 3e-4),
                                  speed_of_sound=value)
        with pytest.raises(PAReconError, match="speed of sound") as err:
            import_ipasc(path, grid=GRID)
        assert err.value.field == "/meta_data/speed_of_sound"
        assert import_ipasc(path, grid=GRID, sound_speed=1500.0)[1]["sound_speed"] == 1500.0


def test_bad_inputs_name_the_field(tmp_path):
    path = write_pacfish_file(tmp_path / "scan.hdf5", np.zeros((3, 10, 2, 1)), line_positions(3, 3e-4))
    with pytest.raises(PAReconError, match="2 wavelength") as err:
        import_ipasc(path, grid=GRID, wavelength_index=2)
    assert err.value.field == "wavelength_index"
    with pytest.raises(PAReconError) as err:
        import_ipasc(path, grid={"nx": 4})
    assert err.value.field == "grid"
    with h5py.File(path, "r+") as f:
        del f["meta_data/ad_sampling_rate"]
        f["binary_time_series_data"][0, 0, 0, 0] = np.nan
    with pytest.raises(PAReconError, match="NaN") as err:
        import_ipasc(path, grid=GRID)
    assert err.value.field == "/binary_time_series_data"
    with h5py.File(path, "r+") as f:
        f["binary_time_series_data"][0, 0, 0, 0] = 0.0
    with pytest.raises(PAReconError, match="sampling rate") as err:
        import_ipasc(path, grid=GRID)
    assert err.value.field == "/meta_data/ad_sampling_rate"


def test_detector_count_must_match_the_data(tmp_path):
    path = write_pacfish_file(tmp_path / "scan.hdf5", np.zeros((4, 10, 1, 1)), line_positions(3, 3e-4))
    with pytest.raises(PAReconError, match="3 detectors described but the data have 4"):
        import_ipasc(path, grid=GRID)


def test_not_hdf5(tmp_path):
    path = tmp_path / "scan.hdf5"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(PAReconError, match="not an HDF5 file"):
        import_ipasc(path, grid=GRID)
