"""HDF5 file layouts (``data_specs/*.yaml``) and the validator that checks a file against one.

A spec file has these top-level keys:

``name``, ``format_version``, ``description``
    identification; ``format_version`` is also written to (and required on) every file's root.
``storage``
    ``chunks`` (``per_scan``: datasets whose first axis is ``n_scans`` get one scan per chunk, or
    ``contiguous``), ``compression`` (an h5py filter name or ``none``) and ``compression_level``;
    used by the writers, not enforced on read.
``dims``
    symbolic dimensions ``name: {min: int, doc: str}``. A dimension takes its value from the first attribute
    (``dim: name``) or dataset axis that names it; every later use must agree.
``attributes``
    ``group path: {attribute name: entry}`` with entry keys ``type`` (``int``, ``float``, ``str``, ``bool``),
    ``required`` (default true), ``dim``, ``equals``, ``min`` (inclusive), ``positive``, ``units``, ``doc``.
``datasets``
    ``path: entry`` with entry keys ``dtype`` (list of numpy dtype names), ``shape`` (list of dimension names
    or integers), ``required`` (default true), ``finite`` (no NaN or inf), ``allow_nan`` (with ``finite``: NaN
    is allowed and marks a value undefined for that scan; inf is not), ``min``, ``labels``, ``units``, ``doc``.
    A path ending in ``/*`` matches every dataset directly inside that group; ``required`` then means "at least
    one". With ``labels: true`` a dataset may carry a ``labels`` attribute, a 1-D array of names: it then holds
    integer codes, each an index into that array (a categorical value such as a stop reason).

Errors are :class:`~pa_recon.errors.PAReconError` with the file and the field (``/path/to/dataset`` or
``/group@attribute``) named.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from pa_recon.errors import PAReconError

__all__ = [
    "AttributeSpec",
    "DatasetSpec",
    "DimSpec",
    "FileSpec",
    "check_values",
    "dataset_labels",
    "load_spec",
    "open_hdf5",
    "spec_dir",
    "spec_names",
    "validate_file",
]

_ATTR_TYPES = ("int", "float", "str", "bool")
_ATTR_KEYS = {"type", "required", "dim", "equals", "min", "positive", "units", "doc"}
_DATASET_KEYS = {"dtype", "shape", "required", "finite", "allow_nan", "min", "labels", "units", "doc"}
_TOP_KEYS = {"name", "format_version", "description", "storage", "dims", "attributes", "datasets"}
# Value checks read this many bytes of a dataset at a time.
_VALUE_BLOCK_BYTES = 1 << 26


@dataclass(frozen=True)
class DimSpec:
    """A symbolic dimension and its lower bound."""

    name: str
    min: int = 0
    doc: str = ""


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute of one group."""

    group: str
    name: str
    type: str
    required: bool = True
    dim: str | None = None
    equals: Any = None
    min: float | None = None
    positive: bool = False
    units: str = ""
    doc: str = ""

    @property
    def field(self) -> str:
        """Name used in error messages, ``/group@attribute``."""
        return f"{self.group}@{self.name}"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset, or every dataset of a group when ``path`` ends in ``/*``."""

    path: str
    dtype: tuple[str, ...]
    shape: tuple[str | int, ...]
    required: bool = True
    finite: bool = False
    allow_nan: bool = False
    min: float | None = None
    labels: bool = False
    units: str = ""
    doc: str = ""

    @property
    def is_pattern(self) -> bool:
        """Whether this entry stands for all datasets of a group."""
        return self.path.endswith("/*")

    @property
    def per_scan(self) -> bool:
        """Whether the first axis is the scan axis."""
        return bool(self.shape) and self.shape[0] == "n_scans"

    def matches(self, path: str) -> bool:
        """Whether a dataset at ``path`` is described by this entry."""
        if self.is_pattern:
            parent, _, name = path.rpartition("/")
            return parent == self.path[:-2] and bool(name)
        return path == self.path


@dataclass(frozen=True)
class FileSpec:
    """A parsed layout."""

    name: str
    format_version: int
    description: str
    chunks: str
    compression: str | None
    compression_level: int | None
    dims: dict[str, DimSpec]
    attributes: tuple[AttributeSpec, ...]
    datasets: tuple[DatasetSpec, ...]
    source: str

    def dataset(self, path: str) -> DatasetSpec:
        """The entry that describes the dataset at ``path``."""
        for entry in self.datasets:
            if entry.matches(path):
                return entry
        raise PAReconError(f"the {self.name!r} layout has no dataset {path!r}", file=self.source, field=path)


def spec_dir() -> Path:
    """The folder holding the layout YAMLs.

    Installed wheels carry them as the data-only package ``pa_recon.data_specs``; a source checkout (and an
    editable install of it) reads ``data_specs/`` at the repository root.
    """
    try:
        packaged = importlib.import_module("pa_recon.data_specs")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "data_specs"
    return Path(next(iter(packaged.__path__)))


def spec_names() -> list[str]:
    """Names of the available layouts."""
    return sorted(p.stem for p in spec_dir().glob("*.yaml"))


def load_spec(name_or_path: str | PathLike[str]) -> FileSpec:
    """Parse a layout by name (``"measurements"``) or from a YAML path."""
    text = str(name_or_path)
    path = Path(text) if text.endswith((".yaml", ".yml")) else spec_dir() / f"{text}.yaml"
    return _load_spec_cached(str(path.resolve()))


@lru_cache(maxsize=None)
def _load_spec_cached(path: str) -> FileSpec:
    if not Path(path).is_file():
        raise PAReconError(f"no such layout (available: {', '.join(spec_names())})", file=path, field="name")
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PAReconError(f"invalid YAML: {err}", file=path, field="/") from None
    if not isinstance(raw, dict) or "format_version" not in raw:
        raise PAReconError("a layout must be a mapping with a format_version", file=path, field="/")
    _no_unknown_keys(raw, _TOP_KEYS, path, "/")
    storage = raw.get("storage") or {}
    chunks = storage.get("chunks", "per_scan")
    if chunks not in ("per_scan", "contiguous"):
        raise PAReconError(f"chunks must be per_scan or contiguous, got {chunks!r}", file=path, field="storage.chunks")
    compression = storage.get("compression", "gzip")
    dims = {name: DimSpec(name, int((entry or {}).get("min", 0)), str((entry or {}).get("doc", "")))
            for name, entry in (raw.get("dims") or {}).items()}

    attributes = []
    for group, entries in (raw.get("attributes") or {}).items():
        for name, entry in (entries or {}).items():
            field = f"attributes.{group}.{name}"
            _no_unknown_keys(entry, _ATTR_KEYS, path, field)
            if entry.get("type") not in _ATTR_TYPES:
                raise PAReconError(f"type must be one of {_ATTR_TYPES}", file=path, field=field)
            if entry.get("dim") is not None and entry["dim"] not in dims:
                raise PAReconError(f"unknown dim {entry['dim']!r}", file=path, field=field)
            attributes.append(AttributeSpec(group=group, name=name, **entry))

    datasets = []
    for ds_path, entry in (raw.get("datasets") or {}).items():
        field = f"datasets.{ds_path}"
        _no_unknown_keys(entry, _DATASET_KEYS, path, field)
        shape = tuple(entry.get("shape", ()))
        unknown = [d for d in shape if isinstance(d, str) and d not in dims]
        if unknown:
            raise PAReconError(f"unknown dims {unknown}", file=path, field=field)
        for dtype in entry.get("dtype", ()):
            try:
                np.dtype(dtype)
            except TypeError:
                raise PAReconError(f"unknown dtype {dtype!r}", file=path, field=field) from None
        datasets.append(DatasetSpec(path=ds_path, dtype=tuple(entry.get("dtype", ())), shape=shape,
                                    **{k: v for k, v in entry.items() if k not in ("dtype", "shape")}))

    return FileSpec(
        name=str(raw.get("name", Path(path).stem)),
        format_version=int(raw["format_version"]),
        description=str(raw.get("description", "")),
        chunks=chunks,
        compression=None if compression in (None, "none") else str(compression),
        compression_level=storage.get("compression_level"),
        dims=dims,
        attributes=tuple(attributes),
        datasets=tuple(datasets),
        source=path,
    )


def validate_file(path: str | PathLike[str], spec: str | FileSpec, *, values: bool = True) -> dict[str, int]:
    """Check an HDF5 file against a layout; return the value of every bound dimension.

    ``values=False`` checks structure only (groups, attributes, dtypes, shapes), reading no array data; readers
    use it and then check the values of what they load with :func:`check_values`.
    """
    spec = spec if isinstance(spec, FileSpec) else load_spec(spec)
    with open_hdf5(path) as handle:
        return _Checker(handle, spec, Path(path)).run(values)


def open_hdf5(path: str | PathLike[str]) -> h5py.File:
    """Open an existing HDF5 file read-only, or raise a :class:`PAReconError` saying why it cannot be."""
    path = Path(path)
    if not path.is_file():
        raise PAReconError("is a folder, not a file" if path.is_dir() else "no such file", file=path, field="/")
    if not h5py.is_hdf5(path):
        raise PAReconError("is not an HDF5 file", file=path, field="/")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise PAReconError(f"cannot be opened as HDF5: {err}", file=path, field="/") from None


def check_values(values: np.ndarray, entry: DatasetSpec, *, file: str | PathLike[str], field: str,
                 first_scan: int = 0, labels: tuple[str, ...] | None = None) -> None:
    """Apply a dataset entry's ``finite``/``allow_nan`` and ``min`` rules to loaded values, and with ``labels``
    (from :func:`dataset_labels`) require codes in ``0 .. len(labels) − 1`` (scan numbers offset by
    ``first_scan`` in messages)."""
    if values.dtype.kind not in "iuf" or values.size == 0:
        return
    flat = values.reshape(values.shape[0], -1) if values.ndim > 1 else values.reshape(-1, 1)

    def reject(bad: np.ndarray, message: str) -> None:
        rows = bad.any(axis=1)
        if rows.any():
            where = "scan" if entry.per_scan else "index"
            raise PAReconError(f"{message} (first at {where} {first_scan + int(np.argmax(rows))})", file=file,
                               field=field)

    if entry.finite and values.dtype.kind == "f":
        reject(np.isinf(flat) if entry.allow_nan else ~np.isfinite(flat),
               "contains inf values" if entry.allow_nan else "contains NaN or inf values")
    if entry.min is not None:
        reject(flat < entry.min, f"has values below {entry.min}")
    if labels is not None:
        reject((flat < 0) | (flat >= len(labels)), f"has codes outside 0 .. {len(labels) - 1} of its labels")


def dataset_labels(dataset: h5py.Dataset, entry: DatasetSpec, *, file: str | PathLike[str],
                   field: str) -> tuple[str, ...] | None:
    """The names of a categorical dataset's codes (its ``labels`` attribute, where ``entry`` allows one), else
    ``None``; checks that they are a non-empty 1-D array of strings on an integer dataset."""
    if not entry.labels or "labels" not in dataset.attrs:
        return None
    raw = np.asarray(dataset.attrs["labels"])
    names = tuple(v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in raw.ravel().tolist())
    if raw.ndim != 1 or not names or not all(isinstance(v, str) for v in names):
        raise PAReconError("must be a non-empty 1-D array of strings", file=file, field=f"{field}@labels")
    if dataset.dtype.kind not in "iu":
        raise PAReconError(f"has labels, so it must hold integer codes, got dtype {dataset.dtype}", file=file,
                           field=field)
    return names


class _Checker:
    """One validation pass; binds symbolic dims as it goes."""

    def __init__(self, handle: h5py.File, spec: FileSpec, path: Path) -> None:
        self.handle = handle
        self.spec = spec
        self.path = path
        self.bound: dict[str, tuple[int, str]] = {}

    def fail(self, field: str, message: str) -> PAReconError:
        return PAReconError(message, file=self.path, field=field)

    def run(self, values: bool) -> dict[str, int]:
        for attr in self.spec.attributes:
            self.check_attribute(attr)
        for entry in self.spec.datasets:
            for ds_path, dataset in self.find(entry):
                self.check_dataset(entry, ds_path, dataset, values)
        return {name: value for name, (value, _) in self.bound.items()}

    def bind(self, dim: str, value: int, field: str) -> None:
        if dim in self.bound:
            known, where = self.bound[dim]
            if known != value:
                raise self.fail(field, f"{dim} is {value} here but {known} from {where}")
            return
        minimum = self.spec.dims[dim].min
        if value < minimum:
            empty = " (the file holds no scans)" if dim == "n_scans" and value == 0 else ""
            raise self.fail(field, f"{dim} is {value}, must be >= {minimum}{empty}")
        self.bound[dim] = (value, field)

    def check_attribute(self, attr: AttributeSpec) -> None:
        group = self.handle.get(attr.group)
        if group is None or attr.name not in group.attrs:
            if attr.required:
                raise self.fail(attr.field, "missing required attribute")
            return
        value = group.attrs[attr.name]
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if not _has_type(value, attr.type):
            raise self.fail(attr.field, f"must be a scalar of type {attr.type}, got {value!r}")
        if attr.type == "float" and not np.isfinite(value):
            raise self.fail(attr.field, f"must be finite, got {value}")
        if attr.equals is not None and value != attr.equals:
            raise self.fail(attr.field, f"must be {attr.equals!r}, got {value!r}")
        if attr.positive and not value > 0:
            raise self.fail(attr.field, f"must be positive, got {value}")
        if attr.min is not None and value < attr.min:
            raise self.fail(attr.field, f"must be >= {attr.min}, got {value}")
        if attr.dim is not None:
            self.bind(attr.dim, int(value), attr.field)

    def find(self, entry: DatasetSpec) -> list[tuple[str, h5py.Dataset]]:
        if entry.is_pattern:
            group_path = entry.path[:-2]
            group = self.handle.get(group_path)
            found = []
            if isinstance(group, h5py.Group):
                found = [(f"{group_path}/{k}", v) for k, v in sorted(group.items())]
            elif group is not None:
                raise self.fail(group_path, "is a dataset, expected a group")
            if not found and entry.required:
                raise self.fail(entry.path, "missing: at least one dataset is required")
        else:
            obj = self.handle.get(entry.path)
            if obj is None:
                if entry.required:
                    raise self.fail(entry.path, "missing required dataset")
                return []
            found = [(entry.path, obj)]
        for ds_path, obj in found:
            if not isinstance(obj, h5py.Dataset):
                raise self.fail(ds_path, "is a group, expected a dataset")
        return found

    def check_dataset(self, entry: DatasetSpec, ds_path: str, dataset: h5py.Dataset, values: bool) -> None:
        dtype = dataset.dtype
        if dtype.name not in entry.dtype:
            raise self.fail(ds_path, f"has dtype {dtype}, expected one of {', '.join(entry.dtype)}")
        shape = dataset.shape
        layout = "[" + ", ".join(str(d) for d in entry.shape) + "]"
        if shape is None or len(shape) != len(entry.shape):
            raise self.fail(ds_path, f"has shape {shape}, expected {layout}")
        for axis, (dim, size) in enumerate(zip(entry.shape, shape)):
            if isinstance(dim, int):
                if size != dim:
                    raise self.fail(ds_path, f"has shape {shape}, expected {layout} (axis {axis} must be {dim})")
            else:
                self.bind(dim, int(size), ds_path)
        labels = dataset_labels(dataset, entry, file=self.path, field=ds_path)
        if values and (entry.finite or entry.min is not None or labels is not None):
            self.check_dataset_values(entry, ds_path, dataset, labels)

    def check_dataset_values(self, entry: DatasetSpec, ds_path: str, dataset: h5py.Dataset,
                             labels: tuple[str, ...] | None) -> None:
        if dataset.ndim == 0:
            check_values(np.atleast_1d(dataset[()]), entry, file=self.path, field=ds_path, labels=labels)
            return
        row_bytes = max(1, dataset.dtype.itemsize * int(np.prod(dataset.shape[1:])))
        block = max(1, _VALUE_BLOCK_BYTES // row_bytes)
        for start in range(0, dataset.shape[0], block):
            check_values(dataset[start:start + block], entry, file=self.path, field=ds_path, first_scan=start,
                         labels=labels)


def _has_type(value: Any, kind: str) -> bool:
    if np.ndim(value) != 0:
        return False
    if kind == "bool":
        return isinstance(value, (bool, np.bool_))
    if isinstance(value, (bool, np.bool_)):
        return False
    if kind == "int":
        return isinstance(value, (int, np.integer))
    if kind == "float":
        return isinstance(value, (int, float, np.integer, np.floating))
    return isinstance(value, str)


def _no_unknown_keys(entry: Any, allowed: set[str], path: str, field: str) -> None:
    if not isinstance(entry, dict):
        raise PAReconError("must be a mapping", file=path, field=field)
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise PAReconError(f"unknown keys {unknown} (allowed: {sorted(allowed)})", file=path, field=field)
