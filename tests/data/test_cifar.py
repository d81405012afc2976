"""The CIFAR-10 readers on tiny fixtures in both published layouts (python batches, JPEG zip), and every error."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pa_recon.data.cifar import BATCH_NAMES, CLASSES, load_cifar10, read_batch
from pa_recon.errors import PAReconError

N_PER_BATCH = 3


def _py2_string(value: bytes) -> bytes:
    return b"U" + bytes([len(value)]) + value  # SHORT_BINSTRING: a Python 2 str, read back as bytes


def python2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch as the official files store it: cPickle protocol 2 from Python 2 with numpy 1, i.e. str keys and
    array bytes as Python 2 strings and the array rebuilt by ``numpy.core.multiarray._reconstruct``.

    Written opcode by opcode because Python 3 cannot produce Python 2 strings; ``data`` is uint8 (N < 256, M).
    """
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_string(b"b") + b"\x87R"
             + b"(K\x01K" + bytes([data.shape[0]]) + b"M" + struct.pack("<H", data.shape[1]) + b"\x86"
             + b"cnumpy\ndtype\n" + _py2_string(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + _py2_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
             + b"\x89T" + struct.pack("<I", data.nbytes) + data.tobytes() + b"tb")
    label_list = b"](" + b"".join(b"K" + bytes([label]) for label in labels) + b"e"
    return (b"\x80\x02}(" + _py2_string(b"batch_label") + _py2_string(b"fake batch") + _py2_string(b"data") + array
            + _py2_string(b"labels") + label_list + b"u.")


def batch_bytes(data: object, labels: object, protocol: int = 2) -> bytes:
    """A batch with the official keys pickled by Python 3 (bytes keys, as Python 3 reads the official files)."""
    return pickle.dumps({b"batch_label": b"fake batch", b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * len(labels)}, protocol=protocol)


def make_batches(folder: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Writes data_batch_1..5 and test_batch with random rows; returns the expected (data, labels) per file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in BATCH_NAMES["train"] + BATCH_NAMES["test"]:
        data = rng.integers(0, 256, size=(N_PER_BATCH, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=N_PER_BATCH).tolist()
        (folder / name).write_bytes(python2_batch(data, labels))
        written[name] = (data, np.array(labels))
    return written


def jpeg_bytes(rgb: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buffer, format="JPEG", quality=75)
    return buffer.getvalue()


#: (entry name, colour): two classes in train, one in test, plus a directory entry as in the shared zip.
JPEG_ENTRIES = [("train/cat/0001.jpg", (200, 10, 10)), ("train/airplane/0000.jpg", (10, 200, 10)),
                ("train/cat/0000.jpg", (10, 10, 200)), ("test/truck/0000.jpg", (128, 128, 128))]


def make_zip(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("train/", b"")
        for name, content in entries:
            archive.writestr(name, content)
    return path


def test_batch_folder_layout_and_pixel_order(tmp_path):
    written = make_batches(tmp_path)
    images, labels = load_cifar10(tmp_path, "train")
    assert images.shape == (5 * N_PER_BATCH, 3, 32, 32) and images.dtype == np.uint8
    assert labels.shape == (5 * N_PER_BATCH,) and labels.dtype == np.int64
    data = np.concatenate([written[name][0] for name in BATCH_NAMES["train"]])
    # Row layout: 1024 red values, then green, then blue, each plane row-major.
    c, r, col = 2, 5, 17
    assert images[4, c, r, col] == data[4, 1024 * c + 32 * r + col]
    np.testing.assert_array_equal(images.reshape(len(images), -1), data)
    np.testing.assert_array_equal(labels, np.concatenate([written[n][1] for n in BATCH_NAMES["train"]]))
    test_images, test_labels = load_cifar10(tmp_path, "test")
    np.testing.assert_array_equal(test_images.reshape(N_PER_BATCH, -1), written["test_batch"][0])
    np.testing.assert_array_equal(test_labels, written["test_batch"][1])


def test_parent_folder_and_tar_gz_give_the_same_arrays(tmp_path):
    make_batches(tmp_path / "unpacked" / "cifar-10-batches-py")
    expected = load_cifar10(tmp_path / "unpacked" / "cifar-10-batches-py", "test")
    got_parent = load_cifar10(tmp_path / "unpacked", "test")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "unpacked" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    for got in (got_parent, load_cifar10(archive, "test")):
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_the_python2_fixture_is_what_pickle_itself_reads():
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    batch = pickle.loads(python2_batch(data, [3, 7]), encoding="bytes")
    np.testing.assert_array_equal(batch[b"data"], data)
    assert batch[b"labels"] == [3, 7] and batch[b"batch_label"] == b"fake batch"


@pytest.mark.parametrize("protocol", [2, 4])
def test_batches_pickled_by_python3_and_numpy2_are_read(protocol):
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    images, labels = read_batch(batch_bytes(data, [1, 9], protocol), "batch")
    np.testing.assert_array_equal(images.reshape(2, -1), data)
    np.testing.assert_array_equal(labels, [1, 9])


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (os.getcwd, ())


def test_pickle_that_would_run_code_is_refused():
    raw = pickle.dumps({b"data": _RunsCode(), b"labels": []}, protocol=2)
    with pytest.raises(PAReconError, match="refused global"):
        read_batch(raw, "evil_batch")


@pytest.mark.parametrize(("content", "field", "message"), [
    (batch_bytes(np.zeros((2, 3000), np.uint8), [0, 1]), "data", r"uint8 array \(N, 3072\)"),
    (batch_bytes(np.zeros((2, 3072), np.float32), [0, 1]), "data", "uint8"),
    (batch_bytes([[0] * 3072] * 2, [0, 1]), "data", "got list"),
    (batch_bytes(np.zeros((2, 3072), np.uint8), [0]), "labels", "1 labels for 2 images"),
    (batch_bytes(np.zeros((2, 3072), np.uint8), [0, 10]), "labels", "0-9"),
    (batch_bytes(np.zeros((2, 3072), np.uint8), [0, "cat"]), "labels", "integer"),
    (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}, protocol=2), "labels", "missing key"),
    (pickle.dumps([1, 2], protocol=2), None, "expected a pickled dict"),
    (b"\x80\x02}q\x00(", None, "not a readable CIFAR-10 batch"),
])
def test_malformed_batch(content, field, message):
    with pytest.raises(PAReconError, match=message) as info:
        read_batch(content, "data_batch_1")
    assert info.value.file == "data_batch_1" and info.value.field == field


def test_missing_batch_file_is_named(tmp_path):
    make_batches(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(PAReconError, match="cannot read") as info:
        load_cifar10(tmp_path, "train")
    assert info.value.file == str(tmp_path / "data_batch_3")
    load_cifar10(tmp_path, "test")  # the test split does not need it


def test_tar_without_a_batch_names_the_member(tmp_path):
    make_batches(tmp_path / "b")
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "b" / "data_batch_1", arcname="cifar-10-batches-py/data_batch_1")
    with pytest.raises(PAReconError, match="no member") as info:
        load_cifar10(archive, "train")
    assert info.value.field == "data_batch_2"


def test_jpeg_zip_layout(tmp_path):
    entries = [(name, jpeg_bytes(rgb)) for name, rgb in JPEG_ENTRIES]
    archive = make_zip(tmp_path / "cifar10_jpeg_q75.zip", entries)
    images, labels = load_cifar10(archive, "train")
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64
    # Sorted entry names: airplane/0000, cat/0000, cat/0001.
    np.testing.assert_array_equal(labels, [CLASSES.index("airplane"), CLASSES.index("cat"), CLASSES.index("cat")])
    decoded = np.asarray(Image.open(io.BytesIO(dict(entries)["train/cat/0000.jpg"])).convert("RGB"))
    np.testing.assert_array_equal(images[1], decoded.transpose(2, 0, 1))
    assert np.abs(images[1].mean(axis=(1, 2)) - [10, 10, 200]).max() <= 2
    test_images, test_labels = load_cifar10(archive, "test")
    assert test_images.shape == (1, 3, 32, 32) and test_labels.tolist() == [9]


def test_jpeg_zip_with_top_folder_unpacked_folder_and_folder_holding_the_zip(tmp_path):
    entries = [(name, jpeg_bytes(rgb)) for name, rgb in JPEG_ENTRIES]
    expected = load_cifar10(make_zip(tmp_path / "plain.zip", entries), "train")
    holder = tmp_path / "holder"
    holder.mkdir()
    make_zip(holder / "prefixed.zip", [(f"CIFAR-10-images-master/{name}", content) for name, content in entries])
    unpacked = tmp_path / "unpacked"
    for name, content in entries:
        (unpacked / name).parent.mkdir(parents=True, exist_ok=True)
        (unpacked / name).write_bytes(content)
    for path in (holder, unpacked):
        got = load_cifar10(path, "train")
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize(("entries", "field", "message"), [
    ([("train/cats/0000.jpg", jpeg_bytes((0, 0, 0)))], "train/cats/0000.jpg", "unknown class folder"),
    ([("train/cat/0000.jpg", jpeg_bytes((0, 0, 0), size=31))], "train/cat/0000.jpg", "expected 32×32"),
    ([("train/cat/0000.jpg", b"not a jpeg")], "train/cat/0000.jpg", "cannot decode"),
    ([("test/cat/0000.jpg", jpeg_bytes((0, 0, 0)))], "train", r"no train/<class>/\*.jpg"),
])
def test_malformed_jpeg_zip(tmp_path, entries, field, message):
    archive = make_zip(tmp_path / "c.zip", entries)
    with pytest.raises(PAReconError, match=message) as info:
        load_cifar10(archive, "train")
    assert info.value.file == str(archive) and info.value.field == field


def test_corrupt_zip(tmp_path):
    archive = make_zip(tmp_path / "c.zip", [(name, jpeg_bytes(rgb)) for name, rgb in JPEG_ENTRIES])
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PAReconError, match="cannot read zip archive") as info:
        load_cifar10(archive, "train")
    assert info.value.file == str(archive)


def test_corrupt_tar_gz(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    with pytest.raises(PAReconError, match="cannot read tar archive"):
        load_cifar10(path, "test")


def test_unknown_layouts_and_missing_path(tmp_path):
    with pytest.raises(PAReconError, match="unknown CIFAR-10 layout") as info:
        load_cifar10(tmp_path, "train")
    assert info.value.file == str(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PAReconError, match="neither a zip nor"):
        load_cifar10(tmp_path / "notes.txt", "train")
    with pytest.raises(PAReconError, match="not found"):
        load_cifar10(tmp_path / "missing.zip", "train")
    with pytest.raises(PAReconError, match="unknown CIFAR-10 split") as info:
        load_cifar10(tmp_path, "valid")  # type: ignore[arg-type]
    assert info.value.field == "split"
