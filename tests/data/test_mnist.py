"""The MNIST IDX reader on tiny hand-made files (gzip and raw), including every malformed case."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from mnist_fixture import idx_bytes

from pa_recon.data.mnist import load_mnist, read_idx
from pa_recon.errors import PAReconError


def write(path: Path, content: bytes, gz: bool) -> Path:
    """Write ``content`` to ``path``, gzip-compressed under ``path.gz`` when ``gz``."""
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def make_split(folder: Path, prefix: str, n: int, gz: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random images and labels of ``n`` digits written as the ``prefix`` split; returns them."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    write(folder / f"{prefix}-images-idx3-ubyte", idx_bytes(images), gz)
    write(folder / f"{prefix}-labels-idx1-ubyte", idx_bytes(labels), gz)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(("split", "prefix"), [("train", "train"), ("test", "t10k")])
def test_round_trip(tmp_path, gz, split, prefix):
    images, labels = make_split(tmp_path, prefix, 5, gz)
    got_images, got_labels = load_mnist(tmp_path, split)
    assert got_images.dtype == np.uint8 and got_images.shape == (5, 28, 28)
    assert got_labels.dtype == np.int64 and got_labels.shape == (5,)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    got_images[0, 0, 0] ^= 1  # the arrays are the caller's to modify


def test_mirror_spelling_with_dots(tmp_path):
    images, _ = make_split(tmp_path, "t10k", 3, gz=False)
    for path in tmp_path.iterdir():
        path.rename(path.with_name(path.name.replace("-idx", ".idx")))
    np.testing.assert_array_equal(load_mnist(tmp_path, "test")[0], images)


def test_gzip_is_recognised_by_content(tmp_path):
    path = tmp_path / "labels-without-gz-suffix"
    path.write_bytes(gzip.compress(idx_bytes(np.array([3, 1, 4]))))
    np.testing.assert_array_equal(read_idx(path, 1), [3, 1, 4])


def test_missing_file(tmp_path):
    make_split(tmp_path, "train", 2, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(PAReconError, match=r"train-labels-idx1-ubyte\.gz: MNIST labels file not found"):
        load_mnist(tmp_path, "train")
    with pytest.raises(PAReconError, match=r"t10k-images-idx3-ubyte\.gz: MNIST images file not found"):
        load_mnist(tmp_path, "test")


@pytest.mark.parametrize(("n", "name", "content", "gz", "message"), [
    # a labels-type (idx1) magic number in front of the image data
    (2, "train-images-idx3-ubyte", idx_bytes(np.zeros((2, 28, 28)), magic=0x0801), True,
     r"train-images-idx3-ubyte\.gz: bad magic number 0x00000801"),
    (2, "train-images-idx3-ubyte", idx_bytes(np.zeros((2, 28, 28)), magic=0x0801), False,
     r"train-images-idx3-ubyte: bad magic number 0x00000801"),
    (2, "train-labels-idx1-ubyte", idx_bytes(np.array([1, 2])) + b"\x00", True,
     r"train-labels-idx1-ubyte\.gz: too long"),
    (4, "train-labels-idx1-ubyte", idx_bytes(np.array([1, 2, 3])), True,
     r"train-labels-idx1-ubyte\.gz: 3 labels for 4 images"),
    (2, "train-images-idx3-ubyte", idx_bytes(np.zeros((2, 32, 32))), False,
     "train-images-idx3-ubyte: images are 32×32, expected 28×28"),
    (2, "train-labels-idx1-ubyte", idx_bytes(np.array([1, 10])), False,
     "train-labels-idx1-ubyte: label 10 outside 0-9"),
], ids=["bad-magic-gz", "bad-magic-raw", "trailing-byte", "count-mismatch", "image-size", "label-range"])
def test_malformed_file_is_named(tmp_path, n, name, content, gz, message):
    make_split(tmp_path, "train", n, gz)
    write(tmp_path / name, content, gz)
    with pytest.raises(PAReconError, match=message):
        load_mnist(tmp_path, "train")


@pytest.mark.parametrize(("name", "keep", "message"), [
    ("train-images-idx3-ubyte", 2, "train-images-idx3-ubyte: truncated"),
    ("train-images-idx3-ubyte", 10, "train-images-idx3-ubyte: truncated"),
    ("train-images-idx3-ubyte", 100, "train-images-idx3-ubyte: truncated"),
    ("train-labels-idx1-ubyte.gz", -12, r"train-labels-idx1-ubyte\.gz: cannot read"),
])
def test_truncated_file_is_named(tmp_path, name, keep, message):
    """Only the first ``keep`` bytes of the file are left (negative: all but the last ``-keep``)."""
    make_split(tmp_path, "train", 2, gz=name.endswith(".gz"))
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(PAReconError, match=message):
        load_mnist(tmp_path, "train")


def test_unknown_split(tmp_path):
    with pytest.raises(PAReconError, match="unknown MNIST split 'val'"):
        load_mnist(tmp_path, "val")  # type: ignore[arg-type]
