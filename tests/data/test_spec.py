"""Layout specs and the validator: every failure kind, each error naming the file and the field."""

from collections.abc import Callable
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


Edit = Callable[[Path], None]


def delete(name: str, attribute: str | None = None) -> Edit:
    """Remove the dataset ``name``, or its (or its group's) attribute."""
    def edit(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            if attribute is None:
                del f[name]
            else:
                del f[name].attrs[attribute]
    return edit


def set_attribute(name: str, attribute: str, value: object) -> Edit:
    """Overwrite the attribute of the group or dataset ``name``."""
    def edit(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            f[name].attrs[attribute] = value
    return edit


def replace(name: str, values: np.ndarray) -> Edit:
    """Replace the dataset ``name`` by ``values``."""
    return lambda path: replace_dataset(path, name, values)


def poke_nan(path: Path) -> None:
    """One NaN in scan 2 of the data."""
    with h5py.File(path, "r+") as f:
        f["measurements/data"][2, 1, 3] = np.nan


@pytest.mark.parametrize("edit, field, match", [
    (delete("grid", "dx"), "/grid@dx", "missing required attribute"),
    (delete("measurements/noise_sigma"), "/measurements/noise_sigma", "missing required dataset"),
    (replace("measurements/noise_sigma", np.ones(N_SCANS + 1)), "/measurements/noise_sigma",
     "n_scans is 4 here but 3"),
    (replace("ground_truth/p0", np.zeros((5, 6))), "/ground_truth/p0",
     r"has shape \(5, 6\), expected \[n_scans, nz, nx\]"),
    (set_attribute("array", "n_samples", N_SAMPLES + 1), "/measurements/data",
     "n_samples is 7 here but 8 from /array@n_samples"),
    (replace("array/element_x", np.zeros(N_ELEMENTS + 2)), "/measurements/data",
     "n_elements is 4 here but 6 from /array/element_x"),
    (poke_nan, "/measurements/data", r"NaN or inf values \(first at scan 2\)"),
    (set_attribute("array", "fs", np.inf), "/array@fs", "must be finite"),
    (replace("measurements/noise_sigma", np.array([0.1, -0.1, 0.1])), "/measurements/noise_sigma",
     r"below 0 \(first at scan 1\)"),
    (set_attribute("grid", "nz", 5.5), "/grid@nz", "type int"),
], ids=["missing-attribute", "missing-dataset", "wrong-shape", "wrong-rank", "dims-against-attributes",
        "element-count", "nan", "inf-attribute", "negative-noise", "attribute-type"])
def test_broken_measurements_are_rejected(measurements, edit, field, match):
    edit(measurements)
    rejected(measurements, "measurements", field, match)


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
