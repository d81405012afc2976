"""CIFAR-10 from the official python batches (folder or ``.tar.gz``) or from a JPEG copy (zip or folder).

Official python version (``cifar-10-python.tar.gz``, folder ``cifar-10-batches-py/``): ``data_batch_1`` …
``data_batch_5`` (train, 5 × 10 000) and ``test_batch`` (10 000) are Python-2 pickles of dicts whose key
``b"data"`` holds a uint8 array ``(N, 3072)``, each row the red, green and blue 32 × 32 planes in row-major order,
and ``b"labels"`` a list of N class indices 0-9. Pickles can run code when loaded, so they are read with a
restricted unpickler that only builds dicts, lists, strings, numbers and plain numpy arrays; anything else in the
file is refused with :class:`PAReconError`.

JPEG version (the copy in ``shared/datasets/cifar10_jpeg``): entries ``{train,test}/<class>/<name>.jpg``, under an
optional common top folder, in a zip or an unpacked folder, with the class folders named as in :data:`CLASSES`.
Images are read in sorted-name order; that order is not the official batch order.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from pa_recon.errors import PAReconError

#: Class names in label order 0-9 (the official order, also alphabetical).
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)
BATCH_NAMES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
BATCH_FOLDER = "cifar-10-batches-py"
_GZIP_MAGIC = b"\x1f\x8b"
_JPEG_ENTRY = re.compile(r"(?:^|/)(train|test)/([^/]+)/[^/]+\.jpe?g$", re.IGNORECASE)


def _latin1_encode(text: str, encoding: str) -> bytes:
    """What protocol-2 pickles written by Python 3 call to rebuild ``bytes``; only latin-1 is allowed."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refused codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the few globals a CIFAR batch needs (numpy arrays and bytes)."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def read_batch(raw: bytes, file: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one pickled batch held in ``raw``.

    ``file`` only names the source in errors. Raises :class:`PAReconError` when the pickle is corrupt or holds
    anything but plain data, or when ``data``/``labels`` are missing or have the wrong type, shape or values.
    """
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # a corrupt pickle can fail in many ways; all mean "not a CIFAR batch"
        raise PAReconError(f"not a readable CIFAR-10 batch pickle ({type(exc).__name__}: {exc})", file=file) from None
    if not isinstance(batch, dict):
        raise PAReconError(f"expected a pickled dict, got {type(batch).__name__}", file=file)
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    for key in ("data", "labels"):
        if key not in batch:
            raise PAReconError("missing key", file=file, field=key)
    data = batch["data"]
    n_values = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != n_values:
        described = f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise PAReconError(f"expected a uint8 array (N, {n_values}), got {described}", file=file, field="data")
    labels = _labels(batch["labels"], len(data), file, "labels")
    return data.reshape(-1, *IMAGE_SHAPE).copy(), labels


def _labels(values: object, n: int, file: str | os.PathLike[str], field: str) -> np.ndarray:
    try:
        labels = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError):
        raise PAReconError("expected a list of integer class indices", file=file, field=field) from None
    if labels.shape != (n,):
        raise PAReconError(f"{labels.size} labels for {n} images", file=file, field=field)
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise PAReconError(f"labels must lie in 0-{len(CLASSES) - 1}, found {labels.min()}..{labels.max()}",
                           file=file, field=field)
    return labels


def _concat(parts: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*parts)
    return np.concatenate(images), np.concatenate(labels)


def _batch_folder(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    parts = []
    for name in BATCH_NAMES[split]:
        path = folder / name
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise PAReconError(f"cannot read CIFAR-10 batch ({exc.strerror or exc})", file=path) from None
        parts.append(read_batch(raw, path))
    return _concat(parts)


def _batch_tar(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with tarfile.open(path) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            parts = []
            for name in BATCH_NAMES[split]:
                stream = tar.extractfile(members[name]) if name in members else None
                if stream is None:
                    raise PAReconError(f"archive has no member .../{name}", file=path, field=name)
                parts.append(read_batch(stream.read(), f"{path}:{members[name].name}"))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise PAReconError(f"cannot read tar archive ({exc})", file=path) from None
    return _concat(parts)


def _jpeg_images(names: Iterable[str], read: Callable[[str], bytes], split: str,
                 source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode the ``split/<class>/*.jpg`` entries among ``names`` (``read`` returns an entry's bytes)."""
    entries = []
    for name in names:
        match = _JPEG_ENTRY.search(name)
        if match and match.group(1).lower() == split:
            if match.group(2) not in CLASSES:
                raise PAReconError(f"unknown class folder {match.group(2)!r}; expected one of {', '.join(CLASSES)}",
                                   file=source, field=name)
            entries.append((name, CLASSES.index(match.group(2))))
    if not entries:
        raise PAReconError(f"no {split}/<class>/*.jpg images found", file=source, field=split)
    entries.sort()
    images = np.empty((len(entries), *IMAGE_SHAPE), dtype=np.uint8)
    for i, (name, _) in enumerate(entries):
        try:
            with Image.open(io.BytesIO(read(name))) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError, zipfile.BadZipFile, zlib.error) as exc:
            raise PAReconError(f"cannot decode image ({exc})", file=source, field=name) from None
        if pixels.shape != (*IMAGE_SHAPE[1:], 3):
            raise PAReconError(f"image is {pixels.shape[1]}×{pixels.shape[0]}, expected 32×32", file=source,
                               field=name)
        images[i] = pixels.transpose(2, 0, 1)
    return images, np.array([label for _, label in entries], dtype=np.int64)


def _jpeg_zip(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as archive:
            return _jpeg_images(archive.namelist(), archive.read, split, path)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise PAReconError(f"cannot read zip archive ({exc})", file=path) from None


def _jpeg_folder(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = [p.relative_to(folder).as_posix() for p in (folder / split).rglob("*") if p.is_file()]
    return _jpeg_images(names, lambda name: (folder / name).read_bytes(), split, folder)


def _archives(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix == ".zip" or p.name.endswith(".tar.gz")))


def load_cifar10(path: str | os.PathLike[str],
                 split: Literal["train", "test"] = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 (RGB) and labels ``(N,)`` int64 of the ``train`` (50 000) or ``test``
    (10 000) split of CIFAR-10.

    ``path`` may be a folder holding the python batches (or a ``cifar-10-batches-py`` folder inside it, or a JPEG
    ``train/``/``test/`` tree), the official ``cifar-10-python.tar.gz``, a JPEG zip, or a folder holding exactly
    one such archive. The format is recognised from the content, not the file name. Raises
    :class:`PAReconError` naming the file (and the entry) when the path or a file is missing, corrupt, of an
    unknown layout, or holds images or labels of the wrong shape or range.
    """
    if split not in BATCH_NAMES:
        raise PAReconError(f"unknown CIFAR-10 split {split!r}; use 'train' or 'test'", field="split")
    path = Path(path)
    if path.is_dir():
        for folder in (path, path / BATCH_FOLDER):
            if any((folder / name).is_file() for names in BATCH_NAMES.values() for name in names):
                return _batch_folder(folder, split)
        if (path / split).is_dir():
            return _jpeg_folder(path, split)
        archives = _archives(path)
        if len(archives) == 1:
            return load_cifar10(archives[0], split)
        raise PAReconError("unknown CIFAR-10 layout: expected python batches (data_batch_1 ... test_batch), a "
                           "cifar-10-batches-py folder, train/ and test/ JPEG class folders, or one .zip/.tar.gz "
                           f"archive (found {len(archives)} archives)", file=path)
    if not path.is_file():
        raise PAReconError("CIFAR-10 path not found", file=path)
    with path.open("rb") as f:
        magic = f.read(4)
    if magic[:2] == b"PK":
        return _jpeg_zip(path, split)
    if magic[:2] == _GZIP_MAGIC or tarfile.is_tarfile(path):
        return _batch_tar(path, split)
    raise PAReconError("unknown CIFAR-10 file: neither a zip nor a (gzipped) tar archive", file=path)
