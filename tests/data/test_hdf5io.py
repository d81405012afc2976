"""HDF5 writers and readers: round trips, scan slices, storage layout and write atomicity."""

import errno
from pathlib import Path

import h5py
import numpy as np
import pytest

from pa_recon.data import hdf5io
from pa_recon.data.hdf5io import (
    data_digest,
    file_kind,
    n_scans,
    read_measurements,
    read_phantoms,
    read_reconstructions,
    reconstruction_writer,
    write_measurements,
    write_phantoms,
    write_reconstructions,
)
from pa_recon.errors import PAReconError
from pa_recon.physics.geometry import Grid, LinearArray

GRID = Grid(nx=6, nz=5, dx=1e-4)
ARRAY = LinearArray.uniform(4, 2e-4, fs=25e6, n_samples=9, sound_speed=1540.0, t0=1e-7, z_array=-1e-4,
                            element_width=1.5e-4, center_frequency=5e6, fractional_bandwidth=0.6)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_phantoms_round_trip_and_slices(tmp_path):
    images = np.random.default_rng(0).random((5, 5, 6)).astype(np.float32)
    path = write_phantoms(tmp_path / "p.h5", images, GRID.to_dict(), attrs={"generator": "test", "seed": 3})
    whole = read_phantoms(path)
    np.testing.assert_array_equal(whole.images, images)
    assert whole.images.dtype == np.float32
    assert Grid.from_dict(whole.grid) == GRID
    assert whole.attrs == {"format_version": 1, "kind": "phantoms", "generator": "test", "seed": 3}
    np.testing.assert_array_equal(read_phantoms(path, start=1, stop=4).images, images[1:4])
    np.testing.assert_array_equal(read_phantoms(path, start=4).images, images[4:])
    assert n_scans(path) == 5 and file_kind(path) == "phantoms"


def test_measurements_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(3, 4, 9))
    p0 = rng.random((3, 5, 6)).astype(np.float32)
    path = write_measurements(tmp_path / "m.h5", data, ARRAY.to_dict(), GRID.to_dict(), noise_sigma=[0.1, 0.2, 0.3],
                              p0=p0, snr_db=25.0, attrs={"source_phantoms": "p.h5"})
    m = read_measurements(path)
    np.testing.assert_array_equal(m.data, data)
    assert LinearArray.from_dict(m.array) == ARRAY
    assert list(m.array) == list(ARRAY.to_dict())
    assert Grid.from_dict(m.grid) == GRID
    np.testing.assert_array_equal(m.noise_sigma, [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(m.snr_db, [25.0] * 3)
    np.testing.assert_array_equal(m.p0, p0)
    assert m.attrs["source_phantoms"] == "p.h5"

    part = read_measurements(path, start=1, stop=2)
    np.testing.assert_array_equal(part.data, data[1:2])
    np.testing.assert_array_equal(part.noise_sigma, [0.2])
    np.testing.assert_array_equal(part.p0, p0[1:2])
    assert n_scans(path) == 3


def test_optional_measurement_fields_read_as_none(tmp_path):
    ideal = LinearArray.uniform(4, 2e-4, fs=25e6, n_samples=9)
    path = write_measurements(tmp_path / "m.h5", np.zeros((2, 4, 9), np.float32), ideal.to_dict(), GRID.to_dict(),
                              noise_sigma=0.0)
    m = read_measurements(path)
    assert m.p0 is None and m.snr_db is None and m.data.dtype == np.float32
    assert LinearArray.from_dict(m.array).center_frequency is None


def test_reconstructions_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    images = {"backprojection": rng.random((2, 5, 6)), "map_latent": rng.random((2, 5, 6)).astype(np.float32)}
    maps = {"posterior_std": rng.random((2, 5, 6)), "hallucination": rng.random((2, 5, 6)) > 0.5}
    path = write_reconstructions(tmp_path / "r.h5", images, GRID.to_dict(), "scans.h5", maps=maps)
    r = read_reconstructions(path)
    assert sorted(r.images) == sorted(images) and sorted(r.maps) == sorted(maps)
    for name, stack in images.items():
        np.testing.assert_array_equal(r.images[name], stack)
        assert r.images[name].dtype == stack.dtype
    np.testing.assert_array_equal(r.maps["hallucination"], maps["hallucination"])
    assert r.source_measurements == "scans.h5" and Grid.from_dict(r.grid) == GRID and r.source_digest is None
    np.testing.assert_array_equal(read_reconstructions(path, start=1).images["backprojection"],
                                  images["backprojection"][1:])


def test_maps_without_an_image_are_refused_for_the_missing_image(tmp_path):
    with pytest.raises(PAReconError, match="at least one dataset is required") as err:
        write_reconstructions(tmp_path / "r.h5", {}, GRID.to_dict(), "scans.h5",
                              maps={"posterior_std": np.ones((2, 5, 6))}, per_scan={"posterior_chi2": np.ones(2)})
    assert err.value.field == "/reconstructions/*" and list(tmp_path.iterdir()) == []


def test_reconstructions_keep_the_digest_of_their_source(tmp_path):
    path = write_reconstructions(tmp_path / "r.h5", {"bp": np.zeros((2, 5, 6))}, GRID.to_dict(), "scans.h5",
                                 source_digest="ab" * 32)
    assert read_reconstructions(path).source_digest == "ab" * 32
    with pytest.raises(PAReconError, match="set by the writer") as err:
        write_reconstructions(tmp_path / "s.h5", {"bp": np.zeros((2, 5, 6))}, GRID.to_dict(), "scans.h5",
                              attrs={"source_data_sha256": "ab" * 32})
    assert err.value.field == "/@source_data_sha256"


def test_data_digest_depends_on_the_data_alone(tmp_path):
    data = np.random.default_rng(3).normal(size=(5, 4, 9)).astype(np.float32)

    def digest(name: str, values: np.ndarray, chunk: int = 64, sigma: float = 0.1) -> str:
        write_measurements(tmp_path / name, values, ARRAY.to_dict(), GRID.to_dict(), sigma)
        return data_digest(tmp_path / name, chunk=chunk)

    first = digest("a.h5", data)
    assert len(first) == 64 and int(first, 16) >= 0
    # Another name, other chunks and other per-scan values leave it; one changed value, dtype or shape do not.
    assert digest("b.h5", data, chunk=2, sigma=0.2) == first
    changed = data.copy()
    changed[4, 3, 8] += 1e-3
    assert len({first, digest("c.h5", changed), digest("d.h5", data.astype(np.float64)),
                digest("e.h5", data[:4])}) == 4


STOP = ("max_steps", "discrepancy", "diverged")


def write_scan_values(path: Path, per_scan: dict, labels: dict | None = None) -> Path:
    return write_reconstructions(path, {"map": np.zeros((3, 5, 6), np.float32)}, GRID.to_dict(), "scans.h5",
                                 per_scan=per_scan, labels=labels)


def test_per_scan_values_round_trip_with_code_labels(tmp_path):
    per_scan = {"map_chi2": np.array([1.2, np.nan, 0.9], np.float32), "map_steps": np.array([0, 17, 500]),
                "map_stop_reason": np.array([1, 2, 0]), "posterior_scan_flag": np.array([True, False, True])}
    path = write_scan_values(tmp_path / "r.h5", per_scan, {"map_stop_reason": STOP})
    r = read_reconstructions(path)
    assert r.per_scan.keys() == per_scan.keys() and r.labels == {"map_stop_reason": STOP}
    for name, values in per_scan.items():
        np.testing.assert_array_equal(r.per_scan[name], values)
        assert r.per_scan[name].dtype == values.dtype
    assert [r.labels["map_stop_reason"][c] for c in r.per_scan["map_stop_reason"]] == list(np.take(STOP, [1, 2, 0]))
    with h5py.File(path) as f:  # as h5py users see it
        assert list(f["per_scan/map_stop_reason"].attrs["labels"]) == list(STOP)
    part = read_reconstructions(path, start=1, stop=2)
    np.testing.assert_array_equal(part.per_scan["map_steps"], [17])
    assert read_reconstructions(write_scan_values(tmp_path / "none.h5", {})).per_scan == {}


@pytest.mark.parametrize(("per_scan", "labels", "field", "match"), [
    ({"tv_chi2": np.ones(2)}, None, "/per_scan/tv_chi2", "has 2 scans here but /reconstructions/map has 3"),
    ({"tv_chi2": np.ones((3, 1))}, None, "/per_scan/tv_chi2", "expected \\[n_scans\\]"),
    ({"tv_chi2": np.array([1.0, np.inf, 1.0])}, None, "/per_scan/tv_chi2", "inf values \\(first at scan 1\\)"),
    ({"tv_chi2": np.array(["a", "b", "c"])}, None, "/per_scan/tv_chi2", "numeric"),
    ({"map_stop_reason": np.array([0, 3, 1])}, {"map_stop_reason": STOP}, "/per_scan/map_stop_reason",
     "codes outside 0 .. 2 of its labels \\(first at scan 1\\)"),
    ({"map_stop_reason": np.array([0, -1, 1])}, {"map_stop_reason": STOP}, "/per_scan/map_stop_reason", "codes"),
    ({"map_chi2": np.ones(3)}, {"map_chi2": STOP}, "/per_scan/map_chi2", "must hold integer codes"),
    ({"map_steps": np.ones(3, int)}, {"map_stop_reason": STOP}, "/per_scan/map_stop_reason@labels",
     "not a per-scan value"),
    ({"map_steps": np.ones(3, int)}, {"map_steps": []}, "/per_scan/map_steps@labels", "non-empty sequence"),
    ({"map_steps": np.ones(3, int)}, {"map_steps": "max_steps"}, "/per_scan/map_steps@labels", "of strings"),
])
def test_bad_per_scan_values_are_refused_by_field(tmp_path, per_scan, labels, field, match):
    target = tmp_path / "r.h5"
    with pytest.raises(PAReconError, match=match) as err:
        write_scan_values(target, per_scan, labels)
    assert err.value.field == field and err.value.file == str(target)
    assert leftovers(tmp_path) == []


def _scans(values: dict, start: int, stop: int) -> dict:
    return {name: stack[start:stop] for name, stack in values.items()}


def _chunk_test_file() -> dict:
    rng = np.random.default_rng(5)
    return {"images": {"map": rng.random((5, 5, 6)).astype(np.float32)},
            "maps": {"map_std": rng.random((5, 5, 6)), "map_flag": rng.random((5, 5, 6)) > 0.5},
            "per_scan": {"map_chi2": rng.random(5), "map_stop_reason": np.array([0, 1, 2, 1, 0])}}


def test_a_reconstruction_written_chunk_by_chunk_in_any_order_equals_one_write(tmp_path):
    values, labels = _chunk_test_file(), {"map_stop_reason": STOP}
    header = {"attrs": {"method": "map"}, "source_digest": "ab" * 32}
    whole = read_reconstructions(write_reconstructions(tmp_path / "whole.h5", values["images"], GRID.to_dict(),
                                                       "scans.h5", maps=values["maps"], per_scan=values["per_scan"],
                                                       labels=labels, **header))
    target = tmp_path / "chunks.h5"
    with reconstruction_writer(target, 5, GRID.to_dict(), "scans.h5", **header) as writer:
        for start, stop in [(3, 5), (0, 2), (2, 3)]:
            writer.put(start, _scans(values["images"], start, stop), maps=_scans(values["maps"], start, stop),
                       per_scan=_scans(values["per_scan"], start, stop), labels=labels)
            assert not target.exists()
    chunked = read_reconstructions(target)
    assert (chunked.attrs, chunked.labels, chunked.source_digest) == (whole.attrs, whole.labels, whole.source_digest)
    for group in ("images", "maps", "per_scan"):
        ours, theirs = getattr(chunked, group), getattr(whole, group)
        assert ours.keys() == theirs.keys() == values[group].keys()
        for name, stack in theirs.items():
            np.testing.assert_array_equal(ours[name], stack)
            np.testing.assert_array_equal(stack, values[group][name])
            assert ours[name].dtype == stack.dtype == values[group][name].dtype
    with h5py.File(target) as f, h5py.File(tmp_path / "whole.h5") as g:
        assert f["maps/map_std"].chunks == g["maps/map_std"].chunks == (1, 5, 6)
        assert f["per_scan/map_chi2"].compression == g["per_scan/map_chi2"].compression == "gzip"
    assert leftovers(tmp_path) == ["chunks.h5", "whole.h5"]


@pytest.mark.parametrize(("chunks", "field", "match"), [
    ([(0, 2, {})], "scans", "3 scans not written \\(first: scan 2\\)"),
    ([(0, 2, {}), (1, 5, {})], "scans", "scan 1 is written twice"),
    ([(0, 2, {}), (2, 4, {"at": 4})], "scans", "scans \\[4, 6\\) are outside the file's 5 scans"),
    ([(0, 2, {}), (2, 5, {"maps": {}})], "/", "members"),
    ([(0, 2, {}), (2, 5, {"images": {"map": np.zeros((3, 5, 6))}})], "/reconstructions/map",
     "float64 values of shape \\(5, 6\\) per scan here, float32"),
    ([(0, 2, {}), (2, 5, {"labels": {}})], "/per_scan", "labels {} here"),
    ([(0, 2, {"per_scan": {"map_chi2": np.ones(3)}})], "/per_scan/map_chi2",
     "has 3 scans here but /reconstructions/map has 2"),
    ([(0, 2, {"per_scan": {"map_chi2": np.float64(1.0)}})], "/per_scan/map_chi2", "got a scalar"),
])
def test_chunked_writes_that_do_not_make_one_file_are_refused_and_leave_nothing(tmp_path, chunks, field, match):
    values, target = _chunk_test_file(), tmp_path / "r.h5"
    with pytest.raises(PAReconError, match=match) as err:
        with reconstruction_writer(target, 5, GRID.to_dict(), "scans.h5") as writer:
            for start, stop, change in chunks:
                parts = {group: _scans(values[group], start, stop) for group in values}
                parts.update(change)
                writer.put(change.get("at", start), parts["images"], maps=parts["maps"], per_scan=parts["per_scan"],
                           labels=change.get("labels", {"map_stop_reason": STOP}))
    assert err.value.field == field and err.value.file == str(target)
    assert leftovers(tmp_path) == []


def test_an_error_of_the_callers_block_passes_unchanged_and_leaves_nothing(tmp_path):
    values, target = _chunk_test_file(), tmp_path / "r.h5"
    write_phantoms(target, np.ones((2, 5, 6)), GRID.to_dict())
    for error in (PAReconError("bad scan", file="scans.h5", field="/measurements/data"), KeyboardInterrupt()):
        with pytest.raises(type(error)) as raised:
            with reconstruction_writer(target, 5, GRID.to_dict(), "scans.h5") as writer:
                writer.put(0, _scans(values["images"], 0, 5))
                raise error
        assert raised.value is error
        assert leftovers(tmp_path) == ["r.h5"] and file_kind(target) == "phantoms"


def test_reader_checks_codes_and_labels_of_per_scan_values(tmp_path):
    path = write_scan_values(tmp_path / "r.h5", {"map_stop_reason": np.array([0, 1, 2])}, {"map_stop_reason": STOP})
    with h5py.File(path, "r+") as f:
        f["per_scan/map_stop_reason"][2] = 7
    assert read_reconstructions(path, stop=2).per_scan["map_stop_reason"].tolist() == [0, 1]
    with pytest.raises(PAReconError, match="codes outside 0 .. 2 of its labels \\(first at scan 2\\)") as err:
        read_reconstructions(path)
    assert err.value.field == "/per_scan/map_stop_reason" and err.value.file == str(path)
    with h5py.File(path, "r+") as f:
        f["per_scan/map_stop_reason"].attrs["labels"] = [1, 2, 3]
    with pytest.raises(PAReconError, match="1-D array of strings") as err:
        read_reconstructions(path)
    assert err.value.field == "/per_scan/map_stop_reason@labels"


def test_per_scan_datasets_are_chunked_by_scan_and_compressed(tmp_path):
    path = write_measurements(tmp_path / "m.h5", np.zeros((3, 4, 9)), ARRAY.to_dict(), GRID.to_dict(),
                              noise_sigma=0.1, p0=np.zeros((3, 5, 6)))
    with h5py.File(path) as f:
        assert f["measurements/data"].chunks == (1, 4, 9)
        assert f["measurements/data"].compression == "gzip"
        assert f["ground_truth/p0"].chunks == (1, 5, 6)
        assert f["array/element_x"].chunks is None
        assert dict(f["grid"].attrs) == GRID.to_dict()


def test_invalid_write_leaves_no_file_and_no_temporary(tmp_path):
    data = np.zeros((2, 4, 9))
    data[1, 2, 3] = np.nan
    target = tmp_path / "m.h5"
    with pytest.raises(PAReconError, match="NaN") as err:
        write_measurements(target, data, ARRAY.to_dict(), GRID.to_dict(), noise_sigma=0.1)
    assert err.value.file == str(target) and err.value.field == "/measurements/data"
    assert leftovers(tmp_path) == []


def test_invalid_write_keeps_the_previous_file(tmp_path):
    target = write_phantoms(tmp_path / "p.h5", np.ones((2, 5, 6)), GRID.to_dict())
    with pytest.raises(PAReconError, match="n_scans is 0") as err:
        write_phantoms(target, np.zeros((0, 5, 6)), GRID.to_dict())
    assert err.value.file == str(target)
    assert leftovers(tmp_path) == ["p.h5"]
    np.testing.assert_array_equal(read_phantoms(target).images, np.ones((2, 5, 6)))


def test_a_file_that_cannot_be_created_is_one_plain_error(tmp_path, monkeypatch):
    def refuse(name, mode, **kwargs):
        raise OSError(errno.EROFS, "Unable to synchronously create file (HDF5 internals)")

    monkeypatch.setattr(hdf5io.h5py, "File", refuse)
    with pytest.raises(PAReconError) as err:
        write_phantoms(tmp_path / "p.h5", np.ones((2, 5, 6)), GRID.to_dict())
    assert str(err.value) == f"{tmp_path / 'p.h5'}: cannot write the file (Read-only file system)"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "field", "match"),
    [
        ({"grid": {"nx": 6, "nz": 5}}, "/grid@dx", "missing required attribute"),
        ({"grid": {"nx": 6, "nz": 5, "dx": 1e-4, "dy": 1e-4}}, "grid", "unknown keys \\['dy'\\]"),
        ({"images": np.zeros((2, 4, 6))}, "/phantoms/images", "nz is 4 here but 5 from /grid@nz"),
        ({"images": np.array([["a"]])}, "/phantoms/images", "numeric"),
        ({"attrs": {"kind": "other"}}, "/@kind", "set by the writer"),
        ({"attrs": {"note": [1, 2]}}, "/@note", "str, int, float or bool"),
    ],
)
def test_writer_rejections_name_the_field_and_leave_nothing(tmp_path, kwargs, field, match):
    arguments = {"images": np.zeros((2, 5, 6)), "grid": GRID.to_dict(), **kwargs}
    with pytest.raises(PAReconError, match=match) as err:
        write_phantoms(tmp_path / "p.h5", **arguments)
    assert err.value.field == field and err.value.file == str(tmp_path / "p.h5")
    assert leftovers(tmp_path) == []


def test_bad_method_name(tmp_path):
    with pytest.raises(PAReconError, match="not a valid dataset name"):
        write_reconstructions(tmp_path / "r.h5", {"a/b": np.zeros((1, 5, 6))}, GRID.to_dict(), "m.h5")
    assert leftovers(tmp_path) == []


def test_reader_checks_values_of_the_scans_it_reads(tmp_path):
    path = write_phantoms(tmp_path / "p.h5", np.zeros((4, 5, 6)), GRID.to_dict())
    with h5py.File(path, "r+") as f:
        f["phantoms/images"][3, 0, 0] = np.inf
    np.testing.assert_array_equal(read_phantoms(path, stop=3).images, np.zeros((3, 5, 6)))
    with pytest.raises(PAReconError, match="first at scan 3") as err:
        read_phantoms(path, start=2)
    assert err.value.field == "/phantoms/images"


def test_reader_rejects_bad_ranges_and_wrong_layouts(tmp_path):
    path = write_phantoms(tmp_path / "p.h5", np.zeros((2, 5, 6)), GRID.to_dict())
    for start, stop in ((0, 3), (2, 2), (-1, 1)):
        with pytest.raises(PAReconError, match="scan range") as err:
            read_phantoms(path, start=start, stop=stop)
        assert err.value.field == "scans"
    with pytest.raises(PAReconError, match="must be 'measurements'") as err:
        read_measurements(path)
    assert err.value.field == "/@kind"


def test_n_scans_of_a_file_without_kind(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(PAReconError, match="kind") as err:
        n_scans(path)
    assert err.value.field == "/@kind" and err.value.file == str(path)
