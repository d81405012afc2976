"""MNIST from its IDX files, gzip-compressed or raw.

IDX layout (big-endian): two zero bytes, a type byte (0x08 = unsigned byte), a byte with the number of
dimensions ``d``, ``d`` 32-bit sizes, then the values in C order. MNIST images are ``idx3`` files
(magic 0x00000803, N × 28 × 28 pixels, 0 = background, 255 = ink); labels are ``idx1`` files
(magic 0x00000801, N digits 0-9). The files are named ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``
with an optional ``.gz``; the spelling ``train-images.idx3-ubyte`` of some mirrors is accepted too.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from pa_recon.errors import PAReconError

IMAGE_SIZE = 28
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str], ndim: int) -> np.ndarray:
    """The unsigned-byte array of ``ndim`` dimensions stored in an IDX file (gzip detected by content).

    Raises :class:`PAReconError` naming the file when it cannot be decompressed, its magic number is not that
    of an unsigned-byte IDX file of ``ndim`` dimensions, or its length does not match its header.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise PAReconError(f"cannot read ({exc})", file=path) from None
    header = 4 + 4 * ndim
    if len(raw) < 4:
        raise PAReconError(f"truncated: {len(raw)} bytes, shorter than the IDX magic number", file=path)
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + ndim:
        raise PAReconError(f"bad magic number 0x{magic:08X}, expected 0x{0x0800 + ndim:08X} "
                           f"(unsigned-byte IDX with {ndim} dimension(s))", file=path)
    if len(raw) < header:
        raise PAReconError(f"truncated: {len(raw)} bytes, shorter than the {header}-byte header", file=path)
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "too long"
        raise PAReconError(f"{state}: {len(raw)} bytes, the header {shape} implies {expected}", file=path)
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def load_mnist(folder: str | os.PathLike[str], split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of the ``train`` (60 000) or ``test`` (10 000) split.

    Raises :class:`PAReconError` naming the file when one is missing or malformed, the images are not 28×28,
    a label is outside 0-9, or the two files hold different numbers of items.
    """
    if split not in _SPLIT_PREFIX:
        raise PAReconError(f"unknown MNIST split {split!r}; use 'train' or 'test'", field="split")
    prefix = _SPLIT_PREFIX[split]
    images_path = _find(Path(folder), prefix, "images", 3)
    labels_path = _find(Path(folder), prefix, "labels", 1)
    images = read_idx(images_path, 3)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise PAReconError(f"images are {images.shape[1]}×{images.shape[2]}, expected 28×28", file=images_path)
    labels = read_idx(labels_path, 1).astype(np.int64)
    if labels.shape[0] != images.shape[0]:
        raise PAReconError(f"{labels.shape[0]} labels for {images.shape[0]} images in {images_path.name}",
                           file=labels_path)
    if labels.size and labels.max() > 9:
        raise PAReconError(f"label {labels.max()} outside 0-9", file=labels_path)
    return images, labels


def _find(folder: Path, prefix: str, kind: str, ndim: int) -> Path:
    names = [f"{prefix}-{kind}{sep}idx{ndim}-ubyte{ext}" for sep in ("-", ".") for ext in (".gz", "")]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise PAReconError(f"MNIST {kind} file not found (looked for {', '.join(names)})", file=folder / names[0])
