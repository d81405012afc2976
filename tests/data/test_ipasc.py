"""IPASC import, against files written with exactly PACFISH's HDF5 layout.

The fixture follows PACFISH 0.4.4 (PyPI; same as github.com/IPASC/PACFISH ``pacfish/iohandler/file_writer.py``
at commit 5cf45fcd2ba88038f6b32e146302abeafc479daf, tags from ``pacfish/core/Metadata.py``): everything is a
dataset, nothing an attribute; Python scalars and strings become scalar datasets (strings variable-length
UTF-8, ``None`` the string "None"), numpy arrays become array datasets; the acquisition metadata go under
``/meta_data``, the device under ``/meta_data_device/{general,detectors,illuminators}`` with element ids
zero-padded to 10 digits by ``DeviceMetaDataCreator``; the time series is ``/binary_time_series_data`` with axes
[detectors, samples, wavelengths, measurements]; units are SI (m, Hz, m/s).
"""

from pathlib import Path

import h5py
import numpy as np
import pytest

from pa_recon.data.ipasc import import_ipasc
from pa_recon.errors import PAReconError
from pa_recon.physics.geometry import LinearArray

GRID = {"nx": 16, "nz": 16, "dx": 1e-4}


def write_pacfish_file(path: Path, data: np.ndarray, positions: np.ndarray, *, fs: float = 40e6,
                       speed_of_sound: float | str | None = 1540.0, geometry: np.ndarray | None = None,
                       detector_ids: list[str] | None = None) -> Path:
    """Write ``data`` ([detectors, samples, wavelengths, measurements]) and detector ``positions`` (n, 3) the way
    ``pacfish.write_data`` does (``speed_of_sound=None`` leaves it out; "None" writes PACFISH's null)."""
    n_detectors = len(positions)
    ids = detector_ids or [str(k).zfill(10) for k in range(n_detectors)]
    acquisition = {
        "uuid": "0b0e9c4a-4f5e-4b43-9a57-a4e1a0b0c001",
        "encoding": "raw",
        "compression": "none",
        "data_type": "double",
        "dimensionality": "time",
        "sizes": np.asarray(data.shape),
        "photoacoustic_imaging_device_reference": "device-1",
        "acquisition_wavelengths": np.linspace(700e-9, 900e-9, data.shape[2] if data.ndim > 2 else 1),
        "ad_sampling_rate": fs,
        "acoustic_coupling_agent": "water",
        "scanning_method": None,
        "measurements_per_image": 1,
    }
    if speed_of_sound is not None:
        is_text = isinstance(speed_of_sound, str)
        acquisition["speed_of_sound"] = speed_of_sound if is_text else np.asarray(speed_of_sound)
    detectors = {}
    for detector_id, position in zip(ids, positions):
        detectors[detector_id] = {
            "detector_position": np.asarray(position, dtype=np.float64),
            "detector_orientation": np.asarray([0.0, 0.0, 1.0]),
            "detector_geometry_type": "CUBOID",
            "detector_geometry": np.asarray([2.5e-4, 4e-3, 1e-4]) if geometry is None else geometry,
            "frequency_response": np.asarray([np.linspace(1e6, 10e6, 10), np.ones(10)]),
        }
    device = {
        "general": {"unique_identifier": "device-1", "field_of_view": np.asarray([0, 3e-3, 0, 0, 0, 1e-2]),
                    "num_detectors": n_detectors, "num_illuminators": 1},
        "detectors": detectors,
        "illuminators": {"0000000000": {"illuminator_position": np.asarray([0.0, 0.0, -1e-3]),
                                        "pulse_width": 7e-9}},
    }

    def save(f: h5py.File, prefix: str, tree: dict) -> None:
        for key, item in tree.items():
            if isinstance(item, dict):
                save(f, f"{prefix}{key}/", item)
            elif item is None:
                f[prefix + key] = "None"
            elif isinstance(item, np.ndarray):
                f.create_dataset(prefix + key, data=item)
            else:
                f[prefix + key] = item

    with h5py.File(path, "w") as f:
        f.create_dataset("binary_time_series_data", data=data)
        save(f, "/meta_data/", acquisition)
        save(f, "/meta_data_device/", device)
    return path


def line_positions(n: int, pitch: float, axis: int = 0, depth: float = 0.0) -> np.ndarray:
    positions = np.zeros((n, 3))
    positions[:, axis] = np.arange(n) * pitch
    positions[:, 2] = depth
    return positions


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
