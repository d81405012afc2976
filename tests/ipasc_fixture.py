"""Writes IPASC files with exactly PACFISH's HDF5 layout (shared by the data and CLI tests).

The layout follows PACFISH 0.4.4 (PyPI; same as github.com/IPASC/PACFISH ``pacfish/iohandler/file_writer.py``
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
