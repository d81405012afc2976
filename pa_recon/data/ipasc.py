"""Import of IPASC-format HDF5 files (as written by PACFISH, ``pacfish.write_data``) from linear arrays.

The IPASC layout (PACFISH 0.4.4, ``pacfish/iohandler/file_writer.py``) stores everything as datasets, none as
attributes:

* ``/binary_time_series_data``: ``[detectors, samples, wavelengths, measurements]`` (trailing axes may be
  missing; PACFISH's own example files are 2-D and 3-D);
* ``/meta_data/ad_sampling_rate`` (Hz, scalar), ``/meta_data/speed_of_sound`` (m/s, scalar or a map; optional);
* ``/meta_data_device/detectors/<id>/detector_position`` (``[x1, x2, x3]`` in m), optional
  ``detector_geometry_type`` (string) and ``detector_geometry`` (for ``"CUBOID"``: extents along x1, x2, x3);
  ``/meta_data_device/general/num_detectors`` (optional). Strings are scalar UTF-8 datasets; ``None`` is
  written as the string ``"None"``.

Conversion to this project's conventions: IPASC x3 is depth, so the array line's x3 becomes ``z_array`` (the
image grid's top edge is x3 = 0); an element's ``element_x`` is its coordinate along the array line (the file's
x1 or x2 for an axis-aligned array), shifted so the array is centred on x = 0 like the grid; each measurement
is one scan; sample 0 is at the laser pulse (``t0 = 0``, IPASC has no start-time field); the sensor is taken
as ideal (``center_frequency = 0``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from os import PathLike
from typing import Any

import h5py
import numpy as np

from pa_recon.data.spec import open_hdf5
from pa_recon.errors import PAReconError

__all__ = ["import_ipasc"]

DATA = "/binary_time_series_data"
DETECTORS = "/meta_data_device/detectors"
SAMPLING_RATE = "/meta_data/ad_sampling_rate"
SPEED_OF_SOUND = "/meta_data/speed_of_sound"
NUM_DETECTORS = "/meta_data_device/general/num_detectors"
# Detectors may deviate from the fitted line by this fraction of the aperture (position round-off).
_LINE_TOLERANCE = 1e-3


def import_ipasc(path: str | PathLike[str], *, grid: Mapping[str, Any], wavelength_index: int = 0,
                 sound_speed: float | None = None, center: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one wavelength of an IPASC file recorded by a linear array.

    Returns data ``(n_scans, n_elements, n_samples)`` (float64 if stored so, else float32; one scan per IPASC
    measurement) and an array dict with the keys of ``LinearArray.to_dict()``. ``grid`` (``{nx, nz, dx}``) is
    the grid the data will be reconstructed on; the array must lie on or above its top edge.
    ``sound_speed`` (m/s) overrides, or stands in for, the file's value. ``center=False`` keeps the lateral
    positions as the file gives them instead of centring the array on x = 0.
    """
    _check_grid(grid)
    with open_hdf5(path) as f:
        data = _time_series(f, path, wavelength_index)
        positions, ids = _detector_positions(f, path)
        if positions.shape[0] != data.shape[1]:
            raise PAReconError(f"{positions.shape[0]} detectors described but the data have {data.shape[1]}",
                               file=path, field=DETECTORS)
        fs = _scalar(f, path, SAMPLING_RATE)
        if fs is None or not fs > 0:
            raise PAReconError(f"a positive sampling rate (Hz) is required, got {fs}", file=path, field=SAMPLING_RATE)
        speed = sound_speed if sound_speed is not None else _scalar(f, path, SPEED_OF_SOUND)
        if speed is None or not speed > 0:
            raise PAReconError("a positive speed of sound is required: the file has none (pass sound_speed=...)",
                               file=path, field=SPEED_OF_SOUND)
        direction = _array_direction(positions, path, ids)
        width = _element_width(f, ids, direction)

    lateral = positions[:, :2] @ direction
    if center:
        lateral = lateral - (lateral.min() + lateral.max()) / 2
    z_array = float(positions[:, 2].mean())
    if z_array > 1e-9:
        raise PAReconError(f"the array line lies at depth x3 = {z_array:.6g} m, inside the image grid, which starts "
                           "at x3 = 0", file=path, field=f"{DETECTORS}/{ids[0]}/detector_position")
    array = {
        "element_x": lateral,
        "fs": float(fs),
        "n_samples": int(data.shape[2]),
        "sound_speed": float(speed),
        "t0": 0.0,
        "z_array": z_array,
        "element_width": width,
        "center_frequency": 0.0,
        "fractional_bandwidth": 0.8,
    }
    return data, array


def _check_grid(grid: Mapping[str, Any]) -> None:
    if not isinstance(grid, Mapping) or not {"nx", "nz", "dx"} <= set(grid):
        raise PAReconError("grid must be a dict with keys nx, nz, dx", field="grid")
    if not (int(grid["nx"]) >= 1 and int(grid["nz"]) >= 1 and float(grid["dx"]) > 0):
        raise PAReconError(f"grid must have nx, nz >= 1 and dx > 0, got {dict(grid)}", field="grid")


def _time_series(f: h5py.File, path: Any, wavelength_index: int) -> np.ndarray:
    """``[detectors, samples, wavelengths, measurements]`` → ``(measurements, detectors, samples)``."""
    dataset = f.get(DATA)
    if not isinstance(dataset, h5py.Dataset):
        raise PAReconError("missing the time-series dataset", file=path, field=DATA)
    if not 2 <= dataset.ndim <= 4 or dataset.dtype.kind not in "iuf":
        raise PAReconError(f"expected a numeric [detectors, samples, wavelengths, measurements] array, got shape "
                           f"{dataset.shape} and dtype {dataset.dtype}", file=path, field=DATA)
    shape = dataset.shape + (1,) * (4 - dataset.ndim)
    if not 0 <= wavelength_index < shape[2]:
        raise PAReconError(f"wavelength_index {wavelength_index} is out of range: the file has {shape[2]} "
                           "wavelength(s)", file=path, field="wavelength_index")
    if min(shape) < 1:
        raise PAReconError(f"the time series is empty (shape {dataset.shape})", file=path, field=DATA)
    values = dataset[()].reshape(shape)[:, :, wavelength_index, :]
    dtype = np.float64 if values.dtype == np.float64 else np.float32
    data = np.ascontiguousarray(values.transpose(2, 0, 1), dtype=dtype)
    if not np.isfinite(data).all():
        raise PAReconError("contains NaN or inf values", file=path, field=DATA)
    return data


def _detector_positions(f: h5py.File, path: Any) -> tuple[np.ndarray, list[str]]:
    group = f.get(DETECTORS)
    if not isinstance(group, h5py.Group) or len(group) == 0:
        raise PAReconError("no detectors described", file=path, field=DETECTORS)
    ids = sorted(group.keys(), key=_natural_key)
    positions = []
    for detector in ids:
        field = f"{DETECTORS}/{detector}/detector_position"
        position = group[detector].get("detector_position")
        value = np.asarray(position[()], dtype=np.float64).reshape(-1) if isinstance(position, h5py.Dataset) else None
        if value is None or value.shape != (3,) or not np.isfinite(value).all():
            raise PAReconError("each detector needs a finite [x1, x2, x3] position in metres", file=path, field=field)
        positions.append(value)
    declared = _scalar(f, path, NUM_DETECTORS)
    if declared is not None and int(declared) != len(ids):
        raise PAReconError(f"says {int(declared)} detectors but {len(ids)} are described", file=path,
                           field=NUM_DETECTORS)
    return np.stack(positions), ids


def _array_direction(positions: np.ndarray, path: Any, ids: list[str]) -> np.ndarray:
    """Unit vector ``(2,)`` in the x1–x2 plane along which the detectors lie; rejects other geometries."""
    if len(positions) == 1:
        return np.array([1.0, 0.0])
    centred = positions - positions.mean(axis=0)
    span = float(np.ptp(positions, axis=0).max())
    tolerance = _LINE_TOLERANCE * span
    line = np.linalg.svd(centred, full_matrices=False)[2][0]
    off_line = np.linalg.norm(centred - np.outer(centred @ line, line), axis=1)
    worst = int(np.argmax(off_line))
    field = f"{DETECTORS}/{ids[worst]}/detector_position"
    if off_line[worst] > tolerance:
        raise PAReconError(f"the detectors do not lie on a line (one is {off_line[worst]:.3g} m off it): only linear "
                           "arrays are supported", file=path, field=field)
    if np.ptp(positions[:, 2]) > tolerance:
        raise PAReconError("the array line is tilted in depth (x3 varies along it): the array must lie at constant "
                           "x3", file=path, field=field)
    direction = line[:2] / np.linalg.norm(line[:2])
    # Orient along the file's dominant axis so element order follows increasing x1 (or x2).
    return direction if direction[np.argmax(np.abs(direction))] > 0 else -direction


def _element_width(f: h5py.File, ids: list[str], direction: np.ndarray) -> float:
    """Element extent along the array for CUBOID detectors (all alike); 0 (point-like) otherwise."""
    widths = []
    for detector in ids:
        group = f[f"{DETECTORS}/{detector}"]
        geometry_type = group.get("detector_geometry_type")
        geometry = group.get("detector_geometry")
        if not isinstance(geometry_type, h5py.Dataset) or not isinstance(geometry, h5py.Dataset):
            return 0.0
        extent = np.asarray(geometry[()])
        if _decode(geometry_type[()]) != "CUBOID" or extent.dtype.kind not in "iuf" or extent.size != 3:
            return 0.0
        widths.append(float(abs(extent.reshape(3)[:2] @ direction)))
    return widths[0] if np.isfinite(widths).all() and np.allclose(widths, widths[0]) else 0.0


def _decode(value: Any) -> Any:
    """PACFISH strings come back from h5py as bytes."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _scalar(f: h5py.File, path: Any, name: str) -> float | None:
    """A numeric scalar dataset (``None`` if absent or stored as the string "None")."""
    dataset = f.get(name)
    if dataset is None:
        return None
    value = _decode(dataset[()]) if isinstance(dataset, h5py.Dataset) else None
    if value == "None":
        return None
    array = np.asarray(value)
    if array.dtype.kind not in "iuf" or array.size != 1:
        raise PAReconError(f"expected a single number, got shape {array.shape} and dtype {array.dtype} (maps are "
                           "not supported)", file=path, field=name)
    result = float(array.reshape(()))
    if not np.isfinite(result):
        raise PAReconError(f"must be finite, got {result}", file=path, field=name)
    return result


def _natural_key(name: str) -> tuple[str, int]:
    """Sort ``element_2`` before ``element_10`` (PACFISH's own ids are zero-padded, which sorts either way)."""
    match = re.match(r"^(.*?)(\d+)$", name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)
