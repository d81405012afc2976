"""Layout specs and the validator: one test per failure kind, each naming the file and the field."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from pa_recon.data.hdf5io import write_measurements, write_phantoms, write_reconstructions
from pa_recon.data.spec import load_spec, spec_dir, spec_names, validate_file
from pa_recon.errors import PAReconError

GRID = {"nx": 6, "nz": 5, "dx": 1e-4}
N_SCANS, N_ELEMENTS, N_SAMPLES = 3, 4, 7
ARRAY = {"element_x": np.linspace(-3e-4, 3e-4, N_ELEMENTS), "fs": 20e6, "n_samples": N_SAMPLES,
         "sound_speed": 1500.0, "t0": 0.0, "z_array": 0.0, "element_width": 0.0, "center_frequency": 0.0,
         "fractional_bandwidth": 0.8}


@pytest.fixture
def measurements(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_measurements(tmp_path / "scans.h5", rng.normal(size=(N_SCANS, N_ELEMENTS, N_SAMPLES)), ARRAY, GRID,
                              noise_sigma=0.1, p0=rng.random((N_SCANS, 5, 6)))


def replace_dataset(path: Path, name: str, values: np.ndarray) -> None:
    with h5py.File(path, "r+") as f:
        del f[name]
        f[name] = values


def rejected(path: Path, spec: str, field: str, match: str) -> PAReconError:
    with pytest.raises(PAReconError, match=match) as err:
        validate_file(path, spec)
    assert err.value.file == str(path) and err.value.field == field
    assert str(path) in str(err.value) and field in str(err.value)
    return err.value


def test_specs_ship_and_parse():
    assert spec_names() == ["measurements", "phantoms", "reconstructions"]
    assert (spec_dir() / "measurements.yaml").is_file()
    spec = load_spec("measurements")
    assert spec.dataset("/measurements/data").shape == ("n_scans", "n_elements", "n_samples")
    assert spec.dataset("/array/element_x").units == "m"
    assert load_spec("reconstructions").dataset("/reconstructions/tv").is_pattern
    assert spec.compression == "gzip" and spec.chunks == "per_scan"


def test_valid_file_binds_all_dims(measurements):
    dims = validate_file(measurements, "measurements")
    assert dims == {"n_scans": N_SCANS, "n_elements": N_ELEMENTS, "n_samples": N_SAMPLES, "nz": 5, "nx": 6}


def test_missing_attribute(measurements):
    with h5py.File(measurements, "r+") as f:
        del f["grid"].attrs["dx"]
    rejected(measurements, "measurements", "/grid@dx", "missing required attribute")


def test_missing_dataset(measurements):
    with h5py.File(measurements, "r+") as f:
        del f["measurements/noise_sigma"]
    rejected(measurements, "measurements", "/measurements/noise_sigma", "missing required dataset")


def test_wrong_shape(measurements):
    replace_dataset(measurements, "measurements/noise_sigma", np.ones(N_SCANS + 1))
    rejected(measurements, "measurements", "/measurements/noise_sigma", "n_scans is 4 here but 3")


def test_wrong_rank(measurements):
    replace_dataset(measurements, "ground_truth/p0", np.zeros((5, 6)))
    rejected(measurements, "measurements", "/ground_truth/p0", r"has shape \(5, 6\), expected \[n_scans, nz, nx\]")


def test_dims_must_agree_with_geometry_attributes(measurements):
    with h5py.File(measurements, "r+") as f:
        f["array"].attrs["n_samples"] = N_SAMPLES + 1
    rejected(measurements, "measurements", "/measurements/data", "n_samples is 7 here but 8 from /array@n_samples")


def test_element_count_must_match_data(measurements):
    replace_dataset(measurements, "array/element_x", np.zeros(N_ELEMENTS + 2))
    rejected(measurements, "measurements", "/measurements/data", "n_elements is 4 here but 6 from /array/element_x")


def test_nan_values(measurements):
    with h5py.File(measurements, "r+") as f:
        f["measurements/data"][2, 1, 3] = np.nan
    rejected(measurements, "measurements", "/measurements/data", "NaN or inf values \\(first at scan 2\\)")


def test_inf_in_attribute(measurements):
    with h5py.File(measurements, "r+") as f:
        f["array"].attrs["fs"] = np.inf
    rejected(measurements, "measurements", "/array@fs", "must be finite")


def test_negative_noise(measurements):
    replace_dataset(measurements, "measurements/noise_sigma", np.array([0.1, -0.1, 0.1]))
    rejected(measurements, "measurements", "/measurements/noise_sigma", "below 0 \\(first at scan 1\\)")


def test_wrong_dtype(tmp_path):
    path = write_phantoms(tmp_path / "phantoms.h5", np.zeros((2, 5, 6), np.float32), GRID)
    replace_dataset(path, "phantoms/images", np.zeros((2, 5, 6), np.int32))
    rejected(path, "phantoms", "/phantoms/images", "dtype int32, expected one of float32, float64")


def test_wrong_attribute_type(measurements):
    with h5py.File(measurements, "r+") as f:
        f["grid"].attrs["nz"] = 5.5
    rejected(measurements, "measurements", "/grid@nz", "type int")


def test_empty_file(tmp_path):
    path = write_phantoms(tmp_path / "ok.h5", np.zeros((1, 5, 6), np.float32), GRID)
    replace_dataset(path, "phantoms/images", np.zeros((0, 5, 6), np.float32))
    rejected(path, "phantoms", "/phantoms/images", "n_scans is 0, must be >= 1 \\(the file holds no scans\\)")


def test_not_hdf5(tmp_path):
    path = tmp_path / "scans.h5"
    path.write_text("time,pressure\n0,1\n")
    rejected(path, "measurements", "/", "is not an HDF5 file")


def test_missing_file(tmp_path):
    rejected(tmp_path / "absent.h5", "phantoms", "/", "no such file")


def test_wrong_kind(tmp_path):
    path = write_phantoms(tmp_path / "phantoms.h5", np.zeros((1, 5, 6), np.float32), GRID)
    rejected(path, "measurements", "/@kind", "must be 'measurements', got 'phantoms'")


def test_reconstructions_need_one_method(tmp_path):
    path = write_reconstructions(tmp_path / "rec.h5", {"bp": np.zeros((2, 5, 6))}, GRID, "scans.h5")
    with h5py.File(path, "r+") as f:
        del f["reconstructions/bp"]
    rejected(path, "reconstructions", "/reconstructions/*", "at least one dataset")


def test_reconstruction_maps_share_the_scan_count(tmp_path):
    path = write_reconstructions(tmp_path / "rec.h5", {"bp": np.zeros((2, 5, 6))}, GRID, "scans.h5",
                                 maps={"posterior_std": np.zeros((2, 5, 6))})
    replace_dataset(path, "maps/posterior_std", np.zeros((3, 5, 6)))
    rejected(path, "reconstructions", "/maps/posterior_std", "n_scans is 3 here but 2 from /reconstructions/bp")


def test_structure_only_validation_skips_values(measurements):
    with h5py.File(measurements, "r+") as f:
        f["measurements/data"][0, 0, 0] = np.inf
    assert validate_file(measurements, "measurements", values=False)["n_scans"] == N_SCANS


def test_spec_typos_are_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nformat_version: 1\ndims: {n: {min: 1}}\n"
                   "datasets:\n  /x: {dtype: [float32], shape: [n], finit: true}\n")
    with pytest.raises(PAReconError, match="unknown keys \\['finit'\\]") as err:
        load_spec(bad)
    assert err.value.field == "datasets./x"
