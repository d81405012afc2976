"""``evaluate`` and ``report`` on hand-written files: user mistakes give one line, exit status 2 and no output."""

import json
from pathlib import Path

import numpy as np
import pytest

from pa_recon.cli import main
from pa_recon.data.hdf5io import data_digest, write_measurements, write_reconstructions
from pa_recon.physics import LinearArray

GRID = {"nx": 16, "nz": 16, "dx": 2e-4}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A measurement file of 4 scans at two SNRs (40 dB first), reconstructions bp, tv and map, a second tv, and the
    metrics of evaluate with and without ``--ranking bp tv``."""
    d = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    truth = rng.random((4, 16, 16)).astype(np.float32)
    array = LinearArray.uniform(8, 2e-4, fs=20e6, n_samples=32).to_dict()
    paths = {"meas": d / "meas.h5", "bp": d / "bp.h5", "tv": d / "tv.h5", "map": d / "map.h5",
             "tv_again": d / "tv_again.h5"}
    write_measurements(paths["meas"], rng.normal(size=(4, 8, 32)).astype(np.float32), array, GRID, 0.1, p0=truth,
                       snr_db=np.array([40.0, 40.0, 20.0, 20.0]))
    for name, method, noise in (("bp", "bp", 0.3), ("tv", "tv", 0.1), ("map", "map", 0.05), ("tv_again", "tv", 0.2)):
        image = np.clip(truth + noise * rng.normal(size=truth.shape), 0, None).astype(np.float32)
        write_reconstructions(paths[name], {method: image}, GRID, "meas.h5", source_digest=data_digest(paths["meas"]))
    for name, extra in (("ranked", ["--ranking", "bp", "tv"]), ("plain", [])):
        paths[name] = d / name / "metrics.json"
        assert main(["evaluate", str(paths["meas"]), str(paths["bp"]), str(paths["tv"]),
                     "--metrics", str(paths[name]), *extra]) == 0
    return {k: str(v) for k, v in paths.items()}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("pa-recon: error: ") and "\n" not in err
    return err


def test_evaluate_refuses_a_negative_figure_count_before_writing_anything(files, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evaluate", files["meas"], files["tv"], "--metrics", str(out / "m.json"), "--n-figures", "-1",
                 "--figures", str(out / "f"), "--plots", str(out / "p")]) == 2
    assert "--n-figures: must be >= 0, got -1" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_evaluate_refuses_two_reconstructions_of_one_name(files, tmp_path, capsys):
    assert main(["evaluate", files["meas"], files["bp"], files["tv"], files["tv_again"],
                 "--metrics", str(tmp_path / "ev" / "m.json"), "--plots", str(tmp_path / "p")]) == 2
    err = _one_line_error(capsys)
    assert f"{files['tv_again']}: /reconstructions/tv: a second reconstruction named 'tv'" in err
    assert files["tv"] in err and "reconstruct --name" in err
    assert list(tmp_path.iterdir()) == []


def test_evaluate_refuses_a_metrics_file_that_is_also_its_plots_folder(files, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["evaluate", files["meas"], files["bp"], "--metrics", out, "--plots", out]) == 2
    assert f"{out}: --metrics: is also the --plots folder" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_report_tables_ranked_and_unranked_sets_together(files, tmp_path):
    out = tmp_path / "results.md"
    assert main(["report", files["ranked"], files["plain"], "--out", str(out)]) == 0
    gains = out.read_text().split("\n\n")[-1].splitlines()
    assert gains[0] == "| test set | group | n | tv over bp |"
    assert [row.split(" | ")[0] for row in gains[2:]] == ["| ranked"] * 2 + ["| plain"] * 2
    assert all("(won" in row for row in gains[2:4]) and all(row.endswith("| – |") for row in gains[4:])


def test_metrics_csvs_and_report_keep_the_order_of_the_reconstructions_and_of_the_scans(files, tmp_path):
    metrics, plots, out = tmp_path / "set" / "metrics.json", tmp_path / "plots", tmp_path / "results.md"
    assert main(["evaluate", files["meas"], files["bp"], files["tv"], files["map"], "--metrics", str(metrics),
                 "--plots", str(plots), "--ranking", "bp", "tv", "map"]) == 0
    summary = json.loads(metrics.read_text())
    assert list(summary) == ["snr40dB", "snr20dB"]
    assert [list(group) for group in summary.values()] == [["bp", "tv", "map"]] * 2
    assert (plots / "psnr_per_scan.csv").read_text().splitlines()[0] == "scan,group,bp,tv,map"
    assert main(["report", str(metrics), "--out", str(out)]) == 0
    psnr, gains = (table.splitlines() for table in out.read_text().split("\n\n"))
    assert psnr[0] == "| test set | group | n | bp PSNR [dB] / SSIM | tv PSNR [dB] / SSIM | map PSNR [dB] / SSIM |"
    assert [row.split(" | ")[1] for row in psnr[2:]] == ["snr40dB", "snr20dB"]
    assert gains[0] == "| test set | group | n | tv over bp | map over tv |"


def test_report_refuses_two_metrics_files_whose_folders_share_a_name(files, tmp_path, capsys):
    first, second = tmp_path / "a" / "setX" / "metrics.json", tmp_path / "b" / "setX" / "metrics.json"
    for path in (first, second):
        path.parent.mkdir(parents=True)
        path.write_text(Path(files["plain"]).read_text())
    out = tmp_path / "report" / "results.md"
    assert main(["report", str(first), str(second), "--out", str(out)]) == 2
    assert f"{second}: test set 'setX' again, after {first}" in _one_line_error(capsys)
    assert not out.parent.exists()


@pytest.mark.parametrize("content, message", [
    ("{}", "not an evaluate metrics file"),
    ("[1, 2]", "not an evaluate metrics file"),
    (json.dumps({"hardware": ["cpu"], "settings": {"seed": 0}}), "not an evaluate metrics file"),  # a run.json
    (json.dumps({"smoke": {"glow": {"test_bpd": 1.3}}}), "not an evaluate metrics file"),  # flow-report's metrics
    (json.dumps({"snr40dB": {}}), "not an evaluate metrics file"),
    (b"\x89HDF\r\n\x1a\n", "cannot read metrics"),
])
def test_report_refuses_a_file_that_is_not_evaluate_metrics(tmp_path, capsys, content, message):
    path = tmp_path / "set" / "metrics.json"
    path.parent.mkdir()
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "report" / "results.md"
    assert main(["report", str(path), "--out", str(out)]) == 2
    assert _one_line_error(capsys).startswith(f"pa-recon: error: {path}: {message}")
    assert not out.parent.exists()


def test_report_names_a_set_in_the_working_folder_by_that_folder(files, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(files["plain"]).parent)
    out = tmp_path / "results.md"
    assert main(["report", "metrics.json", "--out", str(out)]) == 0
    assert out.read_text().splitlines()[2].startswith("| plain | snr40dB | 2 |")
