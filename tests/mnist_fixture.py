"""Writes MNIST files in the IDX format of yann.lecun.com (shared by the data and CLI tests).

An IDX file is a big-endian header (the magic number ``0x0800 + ndim`` for unsigned bytes, then each dimension as
a 4-byte integer) followed by the values as unsigned bytes, row-major.
"""

from __future__ import annotations

import numpy as np


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An unsigned-byte IDX file holding ``array`` (magic ``0x0800 + ndim`` unless given)."""
    magic = 0x0800 + array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()
