"""Evaluation of files a chunk of scans at a time: the metrics of the whole stacks, whatever the chunk; the files'
checks before any metric; reads of one chunk at most."""

import warnings

import h5py
import numpy as np
import pytest

from pa_recon import evaluation
from pa_recon.data.hdf5io import data_digest, write_measurements, write_reconstructions
from pa_recon.errors import PAReconError
from pa_recon.evaluation import evaluate_files
from pa_recon.physics import LinearArray
from pa_recon.report import per_scan_metrics

GRID = {"nx": 16, "nz": 16, "dx": 2e-4}
N = 7
STOP = ("max_steps", "discrepancy", "diverged")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Measurements of 7 scans at two SNRs with their truth; a file with tv, a file with map (per-scan values, one of
    them coded) and posterior (std and flag-score maps, sample counts); the arrays written."""
    d = tmp_path_factory.mktemp("evaluation")
    rng = np.random.default_rng(3)
    truth = rng.random((N, 16, 16)).astype(np.float32)
    array = LinearArray.uniform(8, 2e-4, fs=20e6, n_samples=32).to_dict()
    meas = d / "meas.h5"
    write_measurements(meas, rng.normal(size=(N, 8, 32)).astype(np.float32), array, GRID, 0.1, p0=truth,
                       snr_db=np.array([40.0] * 4 + [26.0] * 3))
    images = {m: np.clip(truth + noise * rng.normal(size=truth.shape), 0, None).astype(np.float32)
              for m, noise in (("tv", 0.2), ("map", 0.1), ("posterior", 0.1))}
    maps = {"posterior_std": (0.05 + 0.2 * rng.random(truth.shape)).astype(np.float32),
            "posterior_flag_score": rng.random(truth.shape).astype(np.float32)}
    values = {"map_chi2": rng.random(N) + 0.5, "map_stop_reason": rng.integers(0, 3, N),
              "posterior_samples": np.array([8, 8, 8, 16, 16, 16, 16])}
    digest = data_digest(meas)
    write_reconstructions(d / "tv.h5", {"tv": images["tv"]}, GRID, "meas.h5", source_digest=digest)
    write_reconstructions(d / "prior.h5", {m: images[m] for m in ("map", "posterior")}, GRID, "meas.h5", maps=maps,
                          per_scan=values, labels={"map_stop_reason": STOP}, source_digest=digest)
    return d, truth, images, maps, values


@pytest.mark.parametrize("chunk", [1, 2, 3, N, 256])
def test_chunks_give_the_metrics_of_the_whole_stacks(files, chunk):
    d, truth, images, maps, values = files
    result = evaluate_files(d / "meas.h5", [d / "tv.h5", d / "prior.h5"], chunk=chunk)
    expected = per_scan_metrics(truth, images, maps, values, {"map_stop_reason": STOP})
    assert list(result.per_scan) == ["tv", "map", "posterior"]
    for method, metrics in expected.items():
        assert list(result.per_scan[method]) == list(metrics)
        for name, v in metrics.items():
            np.testing.assert_array_equal(result.per_scan[method][name], v, err_msg=f"{method} {name}")
    assert {"coverage95", "flag_auroc", "calibration_error"} <= set(result.per_scan["posterior"])
    assert "stop_reason_diverged" in result.per_scan["map"]
    assert result.groups.tolist() == ["snr40dB"] * 4 + ["snr26dB"] * 3
    assert result.sources == {"tv": str(d / "tv.h5"), "map": str(d / "prior.h5"),
                              "posterior": str(d / "prior.h5")}


def test_no_read_holds_more_than_one_chunk(files, monkeypatch):
    d, *_ = files
    ranges = []
    for name in ("read_measurements", "read_reconstructions"):
        reader = getattr(evaluation, name)
        monkeypatch.setattr(evaluation, name, lambda path, *, start=0, stop=None, read=reader:
                            ranges.append((start, stop)) or read(path, start=start, stop=stop))
    evaluate_files(d / "meas.h5", [d / "tv.h5", d / "prior.h5"], chunk=3)
    assert all(stop is not None and stop - start <= 3 for start, stop in ranges)
    assert {r for r in ranges if r != (0, 1)} == {(0, 3), (3, 6), (6, 7)}


def test_scans_without_snrs_form_one_group(files, tmp_path):
    d, truth, images, *_ = files
    meas = tmp_path / "meas.h5"
    array = LinearArray.uniform(8, 2e-4, fs=20e6, n_samples=32).to_dict()
    write_measurements(meas, np.zeros((N, 8, 32), np.float32), array, GRID, 0.1, p0=truth)
    recon = write_reconstructions(tmp_path / "tv.h5", {"tv": images["tv"]}, GRID, "meas.h5",
                                  source_digest=data_digest(meas))
    assert evaluate_files(meas, [recon], chunk=2).groups.tolist() == ["all"] * N


def test_a_file_without_a_digest_is_taken_with_a_warning(files, tmp_path):
    d, _, images, *_ = files
    old = write_reconstructions(tmp_path / "old.h5", {"tv": images["tv"]}, GRID, "meas.h5")
    with pytest.warns(UserWarning, match="does not record which data it reconstructs"):
        result = evaluate_files(d / "meas.h5", [old])
    np.testing.assert_array_equal(result.per_scan["tv"]["psnr"],
                                  evaluate_files(d / "meas.h5", [d / "tv.h5"]).per_scan["tv"]["psnr"])


@pytest.mark.parametrize("chunk", [0, -1, 2.5, True, "4"])
def test_a_chunk_that_is_not_a_positive_count_is_refused(files, chunk):
    d, *_ = files
    with pytest.raises(PAReconError, match="chunk: must be an integer >= 1"):
        evaluate_files(d / "meas.h5", [d / "tv.h5"], chunk=chunk)


def test_a_reconstruction_of_fewer_scans_is_refused(files, tmp_path):
    d, _, images, *_ = files
    short = write_reconstructions(tmp_path / "short.h5", {"tv": images["tv"][:5]}, GRID, "meas.h5",
                                  source_digest=data_digest(d / "meas.h5"))
    with pytest.raises(PAReconError, match=r"short\.h5: /reconstructions/tv: shape \(5, 16, 16\) does not match "
                                           r"the truth \(7, 16, 16\)"):
        evaluate_files(d / "meas.h5", [short])


def test_a_bad_value_in_a_late_chunk_is_named_with_its_file(files, tmp_path):
    d, *_ = files
    bad = tmp_path / "tv.h5"
    bad.write_bytes((d / "tv.h5").read_bytes())
    with h5py.File(bad, "r+") as f:
        f["reconstructions/tv"][6, 2, 3] = np.nan
    with pytest.raises(PAReconError) as raised:
        evaluate_files(d / "meas.h5", [bad], chunk=2)
    assert str(bad) in str(raised.value) and "/reconstructions/tv" in str(raised.value)


def test_measurements_without_truth_are_refused_before_any_reconstruction_is_read(files, tmp_path):
    d, *_ = files
    meas = tmp_path / "meas.h5"
    write_measurements(meas, np.zeros((N, 8, 32), np.float32), LinearArray.uniform(8, 2e-4, fs=20e6,
                                                                                   n_samples=32).to_dict(), GRID, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PAReconError, match="/ground_truth/p0: no ground truth to evaluate against"):
            evaluate_files(meas, [tmp_path / "missing.h5"])
