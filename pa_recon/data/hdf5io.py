"""Writers and readers of the phantom, measurement and reconstruction HDF5 files (layouts in ``data_specs/``).

Writers only ever leave a valid file behind: they write a hidden temporary file next to the target, validate it
against the layout and rename it over the target; on any error the temporary file is removed and the target is
untouched. :func:`reconstruction_writer` fills such a file a chunk of scans at a time. Readers validate the file's
structure, load the requested scans and check their values.

Geometry travels as plain dicts: the grid as ``{nx, nz, dx}`` (``Grid.to_dict()``) and the array as
``LinearArray.to_dict()`` (``element_x`` an array in metres; ``center_frequency`` 0 for an ideal sensor).
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pa_recon.data.spec import (
    FileSpec,
    check_values,
    dataset_labels,
    load_spec,
    open_hdf5,
    spec_names,
    validate_file,
)
from pa_recon.errors import PAReconError

__all__ = [
    "Measurements",
    "Phantoms",
    "ReconstructionWriter",
    "Reconstructions",
    "data_digest",
    "file_kind",
    "n_scans",
    "read_measurements",
    "read_phantoms",
    "read_reconstructions",
    "reconstruction_writer",
    "write_measurements",
    "write_phantoms",
    "write_reconstructions",
]

GRID_KEYS = ("nx", "nz", "dx")
ARRAY_KEYS = ("element_x", "fs", "n_samples", "sound_speed", "t0", "z_array", "element_width",
              "center_frequency", "fractional_bandwidth")
# Root attributes the writers set themselves; user attributes may not override them.
_RESERVED_ROOT = {"format_version", "kind", "source_measurements", "source_data_sha256"}

FilePath = str | PathLike[str]


@dataclass
class Phantoms:
    """Images ``(n, nz, nx)`` of scans ``start .. start + n - 1``, the grid dict and the root attributes."""

    images: np.ndarray
    grid: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurements:
    """Data ``(n, n_elements, n_samples)`` with their array and grid dicts, per-scan ``noise_sigma`` ``(n,)``
    (data units), optional ``p0`` ``(n, nz, nx)`` and ``snr_db`` ``(n,)``, and the root attributes."""

    data: np.ndarray
    array: dict[str, Any]
    grid: dict[str, Any]
    noise_sigma: np.ndarray
    p0: np.ndarray | None = None
    snr_db: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reconstructions:
    """Images ``{method: (n, nz, nx)}``, maps ``{name: (n, nz, nx)}``, the grid dict, the source measurement
    file name, the root attributes, per-scan values ``{name: (n,)}``, for the per-scan values that are
    integer codes the name of each code (``labels[name][code]``), and the :func:`data_digest` of the source
    measurements (``None`` in files written before it was recorded)."""

    images: dict[str, np.ndarray]
    maps: dict[str, np.ndarray]
    grid: dict[str, Any]
    source_measurements: str
    attrs: dict[str, Any] = field(default_factory=dict)
    per_scan: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source_digest: str | None = None


def write_phantoms(path: FilePath, images: np.ndarray, grid: Mapping[str, Any], *,
                   attrs: Mapping[str, Any] | None = None) -> Path:
    """Write images ``(n_scans, nz, nx)`` on ``grid``; ``attrs`` are extra root attributes (str/int/float/bool)."""

    def fill(f: h5py.File, spec: FileSpec) -> None:
        _put_grid(f, grid)
        _put_dataset(f, spec, "/phantoms/images", images)

    return _atomic_write(path, "phantoms", fill, attrs)


def write_measurements(path: FilePath, data: np.ndarray, array: Mapping[str, Any], grid: Mapping[str, Any],
                       noise_sigma: float | np.ndarray, *, p0: np.ndarray | None = None,
                       snr_db: float | np.ndarray | None = None, attrs: Mapping[str, Any] | None = None) -> Path:
    """Write data ``(n_scans, n_elements, n_samples)`` with the array that recorded them and the grid to
    reconstruct on. ``noise_sigma`` (data units) and ``snr_db`` are per scan; a scalar applies to every scan.
    ``p0`` ``(n_scans, nz, nx)`` is the ground truth where known."""
    n = int(np.shape(data)[0]) if np.ndim(data) else 0

    def fill(f: h5py.File, spec: FileSpec) -> None:
        _put_array(f, spec, array)
        _put_grid(f, grid)
        _put_dataset(f, spec, "/measurements/data", data)
        _put_dataset(f, spec, "/measurements/noise_sigma", _per_scan(noise_sigma, n))
        if snr_db is not None:
            _put_dataset(f, spec, "/measurements/snr_db", _per_scan(snr_db, n))
        if p0 is not None:
            _put_dataset(f, spec, "/ground_truth/p0", p0)

    return _atomic_write(path, "measurements", fill, attrs)


def write_reconstructions(path: FilePath, images: Mapping[str, np.ndarray], grid: Mapping[str, Any],
                          source_measurements: FilePath, *, maps: Mapping[str, np.ndarray] | None = None,
                          per_scan: Mapping[str, np.ndarray] | None = None,
                          labels: Mapping[str, Sequence[str]] | None = None,
                          attrs: Mapping[str, Any] | None = None, source_digest: str | None = None) -> Path:
    """Write one image stack ``(n_scans, nz, nx)`` per method name, optional per-scan maps of the same shape
    (e.g. ``posterior_std``, ``hallucination``), optional per-scan values ``(n_scans,)`` (e.g. ``tv_chi2``), the
    grid and the source measurement file name. ``labels[name]`` names the codes of the integer per-scan value
    ``name`` (stored as its ``labels`` attribute). ``source_digest``: the source's :func:`data_digest`, which
    lets a reader tell those data apart from any others of the same shape. :func:`reconstruction_writer` writes
    the same file chunk by chunk."""
    n = next((int(np.shape(stack)[0]) for members in (images, maps or {}, per_scan or {})
              for stack in members.values() if np.ndim(stack)), 0)
    with reconstruction_writer(path, n, grid, source_measurements, attrs=attrs,
                               source_digest=source_digest) as writer:
        writer.put(0, images, maps=maps, per_scan=per_scan, labels=labels)
    return Path(path)


class ReconstructionWriter:
    """The open reconstruction file of :func:`reconstruction_writer`: :meth:`put` writes scans as they come."""

    def __init__(self, f: h5py.File, spec: FileSpec, path: Path, n_scans: int) -> None:
        self._f, self._spec, self._path = f, spec, path
        self._written = np.zeros(n_scans, dtype=bool)
        self._members: set[str] | None = None  # set by the first put
        # Kept open between chunks: closing a dataset flushes its chunk cache, which cost a quarter of the writing time.
        self._datasets: dict[str, h5py.Dataset] = {}
        self._labels: dict[str, tuple[str, ...]] = {}

    def put(self, start: int, images: Mapping[str, np.ndarray], *, maps: Mapping[str, np.ndarray] | None = None,
            per_scan: Mapping[str, np.ndarray] | None = None,
            labels: Mapping[str, Sequence[str]] | None = None) -> None:
        """Scans ``start .. start + n − 1`` of every image stack and map ``(n, nz, nx)`` and per-scan value
        ``(n,)``, named and labelled as in :func:`write_reconstructions`. Every call passes the same names, with
        the same dtypes, trailing shapes and labels; each scan is written once."""
        with _naming(self._path):
            stacks = {f"/{group}/{_member_name(name, group)}": np.asarray(values)
                      for group, members in (("reconstructions", images), ("maps", maps or {}),
                                             ("per_scan", per_scan or {}))
                      for name, values in members.items()}
            n = self._new_scans(start, stacks)
            for ds_path, values in stacks.items():
                self._dataset(ds_path, values)[start:start + n] = values
            self._put_labels(labels or {}, per_scan or {})
            self._members = set(stacks)
            self._written[start:start + n] = True

    def _check_complete(self) -> None:
        """Raise unless every scan has been written."""
        if not self._written.all():
            missing = np.flatnonzero(~self._written)
            raise PAReconError(f"{len(missing)} scans not written (first: scan {missing[0]})", field="scans")

    def _new_scans(self, start: int, stacks: Mapping[str, np.ndarray]) -> int:
        """The number of scans of a chunk, after checking that every member has them, that the members are the
        file's, and that the scans are in the file and not yet written."""
        first = next(iter(stacks), None)
        n = stacks[first].shape[0] if first is not None and stacks[first].ndim else 0
        for ds_path, values in stacks.items():
            if values.ndim == 0:
                raise PAReconError("must be an array with the scans on its first axis, got a scalar", field=ds_path)
            if values.shape[0] != n:
                raise PAReconError(f"has {values.shape[0]} scans here but {first} has {n}", field=ds_path)
        if self._members is not None and set(stacks) != self._members:
            raise PAReconError(f"members {sorted(stacks)} here, {sorted(self._members)} in the file's first scans",
                               field="/")
        total = len(self._written)
        if not 0 <= start <= start + n <= total:
            raise PAReconError(f"scans [{start}, {start + n}) are outside the file's {total} scans", field="scans")
        if self._written[start:start + n].any():
            raise PAReconError(f"scan {start + int(np.argmax(self._written[start:start + n]))} is written twice",
                               field="scans")
        return n

    def _dataset(self, ds_path: str, values: np.ndarray) -> h5py.Dataset:
        """The file's dataset ``ds_path``, created for all scans with the dtype and trailing shape of ``values``."""
        if ds_path not in self._datasets:
            self._datasets[ds_path] = _new_dataset(self._f, self._spec, ds_path,
                                                   (len(self._written), *values.shape[1:]), values.dtype)
            return self._datasets[ds_path]
        dataset = self._datasets[ds_path]
        if (dataset.dtype, dataset.shape[1:]) != (values.dtype, values.shape[1:]):
            raise PAReconError(f"{values.dtype} values of shape {values.shape[1:]} per scan here, "
                               f"{dataset.dtype} of {dataset.shape[1:]} in the file's first scans", field=ds_path)
        return dataset

    def _put_labels(self, labels: Mapping[str, Sequence[str]], per_scan: Mapping[str, np.ndarray]) -> None:
        stored = {}
        for name, names in labels.items():
            if name not in per_scan:
                raise PAReconError(f"labels given for {name!r}, which is not a per-scan value",
                                   field=f"/per_scan/{name}@labels")
            stored[name] = _labels_value(names, f"/per_scan/{name}@labels")
        values = {name: tuple(array.tolist()) for name, array in stored.items()}
        if self._members is None:
            for name, array in stored.items():
                self._f["per_scan"][name].attrs["labels"] = array
            self._labels = values
        elif values != self._labels:
            raise PAReconError(f"labels {values} here, {self._labels} with the file's first scans", field="/per_scan")


@contextmanager
def reconstruction_writer(path: FilePath, n_scans: int, grid: Mapping[str, Any], source_measurements: FilePath, *,
                          attrs: Mapping[str, Any] | None = None,
                          source_digest: str | None = None) -> Iterator[ReconstructionWriter]:
    """A reconstruction file of ``n_scans`` scans written chunk by chunk (scans in any order, each once) with
    :meth:`ReconstructionWriter.put`, so that only a chunk is ever in memory. Like every writer here, it writes a
    hidden temporary file: the file appears at ``path`` only if the block ends without an error and every scan was
    written. ``grid``, ``source_measurements``, ``attrs`` and ``source_digest`` as in
    :func:`write_reconstructions`."""
    spec = load_spec("reconstructions")
    with _atomic_file(path, spec, attrs) as f:
        with _naming(path):
            _put_grid(f, grid)
            f.attrs["source_measurements"] = _attribute_value(os.fspath(source_measurements), "/@source_measurements")
            if source_digest is not None:
                f.attrs["source_data_sha256"] = _attribute_value(source_digest, "/@source_data_sha256")
        writer = ReconstructionWriter(f, spec, Path(path), n_scans)
        yield writer
        with _naming(path):
            writer._check_complete()


def read_phantoms(path: FilePath, *, start: int = 0, stop: int | None = None) -> Phantoms:
    """Read scans ``start .. stop - 1`` (all by default) of a phantom file."""
    with _open_valid(path, "phantoms") as (f, spec, dims):
        scans = _scan_slice(path, dims["n_scans"], start, stop)
        return Phantoms(images=_read(f, spec, path, "/phantoms/images", scans), grid=_grid(f), attrs=_attrs(f))


def read_measurements(path: FilePath, *, start: int = 0, stop: int | None = None) -> Measurements:
    """Read scans ``start .. stop - 1`` (all by default) of a measurement file."""
    with _open_valid(path, "measurements") as (f, spec, dims):
        scans = _scan_slice(path, dims["n_scans"], start, stop)
        array = {key: _plain(f["array"].attrs[key]) if key != "element_x"
                 else _read(f, spec, path, "/array/element_x", slice(None)).astype(np.float64)
                 for key in ARRAY_KEYS}
        return Measurements(
            data=_read(f, spec, path, "/measurements/data", scans),
            array=array,
            grid=_grid(f),
            noise_sigma=_read(f, spec, path, "/measurements/noise_sigma", scans),
            p0=_read(f, spec, path, "/ground_truth/p0", scans) if "/ground_truth/p0" in f else None,
            snr_db=_read(f, spec, path, "/measurements/snr_db", scans) if "/measurements/snr_db" in f else None,
            attrs=_attrs(f),
        )


def read_reconstructions(path: FilePath, *, start: int = 0, stop: int | None = None) -> Reconstructions:
    """Read scans ``start .. stop - 1`` (all by default) of every method, map and per-scan value of a
    reconstruction file."""
    with _open_valid(path, "reconstructions") as (f, spec, dims):
        scans = _scan_slice(path, dims["n_scans"], start, stop)
        stacks = {group: {name: _read(f, spec, path, f"/{group}/{name}", scans) for name in f.get(group, {})}
                  for group in ("reconstructions", "maps", "per_scan")}
        labels = {name: names for name in stacks["per_scan"]
                  if (names := _labels(f, spec, path, f"/per_scan/{name}")) is not None}
        digest = f.attrs.get("source_data_sha256")
        return Reconstructions(images=stacks["reconstructions"], maps=stacks["maps"], grid=_grid(f),
                               source_measurements=str(_plain(f.attrs["source_measurements"])), attrs=_attrs(f),
                               per_scan=stacks["per_scan"], labels=labels,
                               source_digest=None if digest is None else str(_plain(digest)))


def data_digest(path: FilePath, *, chunk: int = 64) -> str:
    """SHA-256 (hex) of a measurement file's data: their shape, dtype and values as stored, read ``chunk`` scans
    at a time. Two files with the same data give the same digest, wherever they lie and whatever they are named."""
    with _open_valid(path, "measurements") as (f, _, dims):
        data = f["/measurements/data"]
        digest = hashlib.sha256(f"{data.dtype.str}{data.shape}".encode())
        for start in range(0, dims["n_scans"], chunk):
            digest.update(np.ascontiguousarray(data[start:start + chunk]).tobytes())
    return digest.hexdigest()


def file_kind(path: FilePath) -> str:
    """The layout a file declares in its root ``kind`` attribute (``phantoms``, ``measurements``, ...)."""
    with open_hdf5(path) as f:
        kind = _plain(f.attrs.get("kind"))
    if kind not in spec_names():
        raise PAReconError(f"unknown or missing layout kind {kind!r}", file=path, field="/@kind")
    return kind


def n_scans(path: FilePath) -> int:
    """Number of scans in a phantom, measurement or reconstruction file (checks its structure, reads no data)."""
    return validate_file(path, file_kind(path), values=False)["n_scans"]


@contextmanager
def _open_valid(path: FilePath, spec_name: str) -> Iterator[tuple[h5py.File, FileSpec, dict[str, int]]]:
    """Validate a file's structure, then yield ``(open handle, spec, bound dims)``."""
    spec = load_spec(spec_name)
    dims = validate_file(path, spec, values=False)
    with open_hdf5(path) as f:
        yield f, spec, dims


def _atomic_write(path: FilePath, spec_name: str, fill: Callable[[h5py.File, FileSpec], None],
                  attrs: Mapping[str, Any] | None) -> Path:
    spec = load_spec(spec_name)
    with _atomic_file(path, spec, attrs) as f, _naming(path):
        fill(f, spec)
    return Path(path)


@contextmanager
def _atomic_file(path: FilePath, spec: FileSpec, attrs: Mapping[str, Any] | None) -> Iterator[h5py.File]:
    """A new file of layout ``spec`` with its root attributes, open for writing; when the block ends without an
    error it is validated and renamed to ``path``, otherwise removed. Errors of the block pass unchanged (wrap the
    writing steps in :func:`_naming`)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise PAReconError("output directory does not exist", file=path, field="/")
    # A hidden sibling (same file system, so the rename is atomic); h5py creates it with the usual umask.
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with _naming(path):
            f = h5py.File(tmp, "x")
        try:
            with _naming(path):
                f.attrs["format_version"] = spec.format_version
                f.attrs["kind"] = spec.name
                for key, value in (attrs or {}).items():
                    if key in _RESERVED_ROOT:
                        raise PAReconError(f"attribute {key!r} is set by the writer", field=f"/@{key}")
                    f.attrs[key] = _attribute_value(value, f"/@{key}")
            yield f
        finally:
            with _naming(path):
                f.close()
        with _naming(path):
            validate_file(tmp, spec)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _naming(path: FilePath) -> Iterator[None]:
    """Errors of writing ``path`` as :class:`PAReconError` naming ``path``, not the temporary file being written."""
    try:
        yield
    except PAReconError as err:
        raise PAReconError(err.message, file=path, field=err.field) from None
    except OSError as err:  # h5py's own message names the temporary file and HDF5 internals
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise PAReconError(f"cannot write the file ({reason})", file=path) from None


def _put_dataset(f: h5py.File, spec: FileSpec, ds_path: str, values: Any) -> None:
    """Create a dataset holding ``values`` with the layout's storage settings."""
    array = np.asarray(values)
    dataset = _new_dataset(f, spec, ds_path, array.shape, array.dtype)
    if array.size:
        dataset[()] = array


def _new_dataset(f: h5py.File, spec: FileSpec, ds_path: str, shape: tuple[int, ...],
                 dtype: np.dtype) -> h5py.Dataset:
    """An empty numeric dataset with the layout's storage settings (one scan per chunk for per-scan datasets)."""
    if dtype.kind not in "biuf":
        raise PAReconError(f"must be a numeric array, got dtype {dtype}", field=ds_path)
    entry = spec.dataset(ds_path)
    chunked = spec.chunks == "per_scan" and entry.per_scan and len(shape) >= 1 and math.prod(shape) > 0
    return f.create_dataset(
        ds_path,
        shape=shape,
        dtype=dtype,
        chunks=(1, *shape[1:]) if chunked else None,
        compression=spec.compression if chunked else None,
        compression_opts=spec.compression_level if chunked else None,
    )


def _put_grid(f: h5py.File, grid: Mapping[str, Any]) -> None:
    group = f.require_group("grid")
    for key, value in _known_keys(grid, GRID_KEYS, "grid").items():
        group.attrs[key] = _attribute_value(value, f"/grid@{key}")


def _put_array(f: h5py.File, spec: FileSpec, array: Mapping[str, Any]) -> None:
    values = _known_keys(array, ARRAY_KEYS, "array")
    group = f.require_group("array")
    for key, value in values.items():
        if key == "element_x":
            _put_dataset(f, spec, "/array/element_x", np.asarray(value, dtype=np.float64).reshape(-1))
        else:
            group.attrs[key] = _attribute_value(value, f"/array@{key}")


def _known_keys(values: Mapping[str, Any], allowed: tuple[str, ...], name: str) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise PAReconError(f"{name} must be a dict with keys {allowed}", field=name)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise PAReconError(f"unknown keys {unknown} (expected {allowed})", field=name)
    return dict(values)


def _attribute_value(value: Any, field_name: str) -> Any:
    """A value h5py stores as a scalar attribute of the right type."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return value
    raise PAReconError(f"attribute values must be str, int, float or bool, got {type(value).__name__}",
                       field=field_name)


def _labels_value(names: Sequence[str], field_name: str) -> np.ndarray:
    """Code names as an array h5py stores as variable-length strings."""
    if isinstance(names, str) or not names or not all(isinstance(n, str) for n in names):
        raise PAReconError(f"must be a non-empty sequence of strings, got {names!r}", field=field_name)
    return np.array(list(names), dtype=h5py.string_dtype())


def _per_scan(values: float | np.ndarray, n: int) -> np.ndarray:
    values = np.asarray(values)
    return np.full(n, values, dtype=np.float64) if values.ndim == 0 else values


def valid_member_name(name: object) -> bool:
    """Whether ``name`` can name a dataset inside a group: a non-empty string without ``/``, not ``.`` or ``..``."""
    return isinstance(name, str) and bool(name) and "/" not in name and name not in (".", "..")


def _member_name(name: str, group: str) -> str:
    if not valid_member_name(name):
        raise PAReconError(f"{name!r} is not a valid dataset name", field=f"/{group}/{name}")
    return name


def _scan_slice(path: FilePath, total: int, start: int, stop: int | None) -> slice:
    stop = total if stop is None else stop
    if not 0 <= start < stop <= total:
        raise PAReconError(f"scan range [{start}, {stop}) is outside the file's {total} scans", file=path,
                           field="scans")
    return slice(start, stop)


def _read(f: h5py.File, spec: FileSpec, path: FilePath, ds_path: str, scans: slice) -> np.ndarray:
    entry = spec.dataset(ds_path)
    values = f[ds_path][scans] if entry.per_scan else f[ds_path][()]
    check_values(values, entry, file=path, field=ds_path, first_scan=scans.start or 0,
                 labels=_labels(f, spec, path, ds_path))
    return values


def _labels(f: h5py.File, spec: FileSpec, path: FilePath, ds_path: str) -> tuple[str, ...] | None:
    """The checked code names of the dataset at ``ds_path``; ``None`` unless it is a coded per-scan value."""
    return dataset_labels(f[ds_path], spec.dataset(ds_path), file=path, field=ds_path)


def _grid(f: h5py.File) -> dict[str, Any]:
    return {key: _plain(f["grid"].attrs[key]) for key in GRID_KEYS}


def _attrs(f: h5py.File) -> dict[str, Any]:
    return {key: _plain(value) for key, value in f.attrs.items()}


def _plain(value: Any) -> Any:
    """numpy scalars and bytes → Python int/float/bool/str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value
