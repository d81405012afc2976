"""Evaluation summaries: per-scan values of the reconstruction files become metrics of their method."""

import numpy as np
import pytest

from pa_recon.errors import PAReconError
from pa_recon.metrics import interval_coverage
from pa_recon.report import (
    add_paired_gains,
    per_scan_metrics,
    results_table,
    summarise,
    write_per_scan_csv,
    write_text,
)

STOP = ("max_steps", "discrepancy", "diverged")


@pytest.fixture
def scans():
    """Four scans; methods map and map_latent (whose names share a prefix) and posterior."""
    rng = np.random.default_rng(0)
    truth = rng.random((4, 12, 12))
    images = {m: truth + 0.1 * rng.normal(size=truth.shape) for m in ("map", "map_latent", "posterior")}
    values = {"map_chi2": np.array([1.0, 2.0, 3.0, np.nan], np.float32),
              "map_stop_reason": np.array([1, 1, 0, 2]), "map_steps": np.array([3, 5, 9, 2]),
              "map_latent_chi2": np.array([0.5, 0.5, 1.5, 1.5]),
              "posterior_scan_flag": np.array([True, False, False, False])}
    return truth, images, values


def test_scan_values_become_metrics_of_their_own_method(scans):
    truth, images, values = scans
    out = per_scan_metrics(truth, images, scan_values=values, labels={"map_stop_reason": STOP})
    assert set(out["map"]) == {"psnr", "ssim", "rel_error", "chi2", "steps", "stop_reason_max_steps",
                               "stop_reason_discrepancy", "stop_reason_diverged"}
    assert set(out["map_latent"]) == {"psnr", "ssim", "rel_error", "chi2"}
    np.testing.assert_array_equal(out["map_latent"]["chi2"], values["map_latent_chi2"])
    np.testing.assert_array_equal(out["map"]["stop_reason_discrepancy"], [1, 1, 0, 0])
    np.testing.assert_array_equal(out["posterior"]["scan_flag"], [1, 0, 0, 0])
    summary = summarise(out, np.array(["a", "a", "a", "a"]))["a"]
    assert summary["map"]["chi2"] == pytest.approx(2.0)  # the scan without a χ² (NaN) is left out
    assert summary["map"]["stop_reason_discrepancy"] == 0.5 and summary["map"]["steps"] == pytest.approx(4.75)
    assert summary["posterior"]["scan_flag"] == 0.25  # the fraction of flagged scans


def test_a_std_map_gives_interval_metrics_from_the_sample_counts_where_there_are_any(scans):
    truth, images, values = scans
    std = {"posterior_std": np.full(truth.shape, 0.1)}
    counts = np.array([3.0, 3.0, 16.0, 16.0])
    known = per_scan_metrics(truth, images, maps=std)["posterior"]
    sampled = per_scan_metrics(truth, images, maps=std, scan_values={"posterior_samples": counts})["posterior"]
    for level in (68, 95):
        np.testing.assert_array_equal(known[f"coverage{level}"],
                                      interval_coverage(images["posterior"], std["posterior_std"], truth,
                                                        level / 100))
        np.testing.assert_array_equal(sampled[f"coverage{level}"],
                                      interval_coverage(images["posterior"], std["posterior_std"], truth,
                                                        level / 100, counts))
        assert np.all(sampled[f"coverage{level}"] > known[f"coverage{level}"])   # Student's intervals are wider
    np.testing.assert_array_equal(sampled["samples"], counts)
    assert not np.array_equal(sampled["calibration_error"], known["calibration_error"])


def test_paired_gains_are_per_scan_differences_with_the_method_before(scans):
    truth, images, _ = scans
    out = per_scan_metrics(truth, images)
    before = {m: dict(v) for m, v in out.items()}
    add_paired_gains(out, ["posterior", "map", "map_latent"])
    for method, previous in (("map", "posterior"), ("map_latent", "map")):
        for metric in ("psnr", "ssim"):
            gain = before[method][metric] - before[previous][metric]
            np.testing.assert_array_equal(out[method][f"{metric}_gain_over_{previous}"], gain)
            np.testing.assert_array_equal(out[method][f"{metric}_won_over_{previous}"], gain > 0)
    assert out["posterior"] == before["posterior"]
    with pytest.raises(PAReconError, match="ranking"):
        add_paired_gains(out, ["map", "tv"])


def test_results_table_shows_paired_gains_with_their_spread_and_scans_won():
    r = {"psnr": 20.0, "psnr_std": 1.0, "ssim": 0.8, "ssim_std": 0.1, "n": 4,
         "psnr_gain_over_tv": 0.25, "psnr_gain_over_tv_std": 0.5, "psnr_won_over_tv": 0.75,
         "ssim_gain_over_tv": -0.0125, "ssim_gain_over_tv_std": 0.02, "ssim_won_over_tv": 0.25}
    tv = {"psnr": 19.75, "psnr_std": 1.0, "ssim": 0.81, "ssim_std": 0.1, "n": 4}
    tables = results_table({"set": {"a": {"tv": tv, "map": r}}}).split("\n\n")
    assert len(tables) == 2
    assert tables[1].splitlines()[0] == "| test set | group | n | map over tv |"
    assert tables[1].splitlines()[2] == "| set | a | 4 | +0.25 ± 0.50 / -0.013 ± 0.020 (won 75%/25%) |"


def test_csv_columns_are_the_methods_with_the_metric(scans, tmp_path):
    truth, images, values = scans
    out = per_scan_metrics(truth, images, scan_values=values)
    write_per_scan_csv(tmp_path / "chi2.csv", out, "chi2", np.array(["a"] * 4))
    rows = (tmp_path / "chi2.csv").read_text().splitlines()
    assert rows[0] == "scan,group,map,map_latent" and rows[3] == "2,a,3,1.5"


def test_results_table_adds_the_chi2_table_only_where_methods_report_chi2(scans):
    truth, images, values = scans
    groups = np.array(["a"] * 4)
    plain = results_table({"set": summarise(per_scan_metrics(truth, images), groups)})
    assert "χ²" not in plain and len(plain.splitlines()) == 3
    full = results_table({"set": summarise(per_scan_metrics(truth, images, scan_values=values), groups)})
    consistency = full.split("\n\n")[1].splitlines()
    assert consistency[0] == ("| test set | group | n | map mean χ² (flagged scans)"
                              " | map_latent mean χ² (flagged scans) | posterior mean χ² (flagged scans) |")
    assert consistency[2] == "| set | a | 4 | 2 | 1 | – |"


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "results.md"
    (target / "sub").mkdir(parents=True)  # a folder where the file should go: the final rename fails
    with pytest.raises(OSError):
        write_text(target, "table")
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]
