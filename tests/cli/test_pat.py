"""End to end through the CLI on a tiny geometry: phantoms → simulate → reconstruct → evaluate, and user errors."""

import copy
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from ipasc_fixture import line_positions, write_pacfish_file

from pa_recon import batch
from pa_recon.cli import build_parser, main
from pa_recon.data import hdf5io
from pa_recon.data.hdf5io import (
    data_digest,
    read_measurements,
    read_phantoms,
    read_reconstructions,
    write_measurements,
    write_reconstructions,
)
from pa_recon.errors import PAReconError
from pa_recon.physics import Grid, LinearArray, PATOperator
from pa_recon.recon import method_settings

PARAMS = {
    "geometry": {
        "grid": {"nx": 16, "nz": 16, "dx": 2e-4},
        "array": {"n_elements": 16, "pitch": 2e-4, "fs": 20e6, "n_samples": 64, "element_width": 1.5e-4,
                  "center_frequency": 4e6, "fractional_bandwidth": 1.2},
    },
    "phantoms": {"refine": 2},
    "test_sets": {"tiny": {"source": "procedural", "n": 3, "seed": 5, "vessels": {"density": 1.5}}},
    "simulate": {"snr_db": [40.0, 20.0], "seed": 1},
    "reconstruct": {"cgls": {"n_iter": 10}, "tv": {"n_iter": 20}},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Runs the whole chain once; returns the folder and the files."""
    d = tmp_path_factory.mktemp("cli")
    params = d / "params.yaml"
    params.write_text(yaml.safe_dump(PARAMS))
    files = {"phantoms": d / "ph.h5", "meas": d / "meas.h5"}
    assert main(["phantoms", "--params", str(params), "--set", "tiny", "--out", str(files["phantoms"])]) == 0
    assert main(["simulate", str(files["phantoms"]), "--params", str(params), "--out", str(files["meas"]),
                 "--device", "cpu"]) == 0
    for method in ("bp", "cgls", "tv"):
        files[method] = d / "recon" / f"{method}.h5"
        assert main(["reconstruct", str(files["meas"]), "--method", method, "--params", str(params),
                     "--out", str(files[method]), "--batch-size", "4", "--device", "cpu"]) == 0
    assert main(["evaluate", str(files["meas"]), *(str(files[m]) for m in ("bp", "cgls", "tv")),
                 "--metrics", str(d / "report" / "metrics.json"), "--plots", str(d / "report" / "plots"),
                 "--figures", str(d / "report" / "figures"), "--n-figures", "2"]) == 0
    return d, files, params


def test_phantoms_are_on_the_refined_grid(run):
    _, files, _ = run
    ph = read_phantoms(files["phantoms"])
    assert ph.images.shape == (3, 32, 32) and ph.grid["dx"] == pytest.approx(1e-4)


def test_measurements_hold_every_phantom_at_every_snr_with_coarse_truth(run):
    _, files, _ = run
    meas = read_measurements(files["meas"])
    ph = read_phantoms(files["phantoms"])
    assert meas.data.shape == (6, 16, 64)
    np.testing.assert_array_equal(meas.snr_db, [40, 40, 40, 20, 20, 20])
    coarse = ph.images.reshape(3, 16, 2, 16, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(meas.p0, np.concatenate([coarse, coarse]), atol=1e-6)
    # Same phantom, more noise: the 20 dB scans differ from the 40 dB ones by about 10× the 40 dB noise.
    assert np.all(meas.noise_sigma[3:] > 5 * meas.noise_sigma[:3])


def test_reconstructions_are_batched_without_seams(run, tmp_path):
    d, files, params = run
    one_batch = tmp_path / "tv.h5"
    assert main(["reconstruct", str(files["meas"]), "--method", "tv", "--params", str(params),
                 "--out", str(one_batch), "--batch-size", "6", "--device", "cpu"]) == 0
    recon = read_reconstructions(files["tv"])
    assert recon.images["tv"].shape == (6, 16, 16) and recon.source_measurements == "meas.h5"
    assert np.all(recon.images["tv"] >= 0)
    # Batches of 4 (scans 0–3, 4–5) give each scan what one batch of 6 gives it.
    np.testing.assert_allclose(recon.images["tv"], read_reconstructions(one_batch).images["tv"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["bp", "cgls", "tv"])
def test_every_reconstruction_stores_its_chi2_per_scan(run, method):
    _, files, _ = run
    recon, meas = read_reconstructions(files[method]), read_measurements(files["meas"])
    assert set(recon.per_scan) == {f"{method}_chi2"} and recon.labels == {}
    op = PATOperator(Grid.from_dict(meas.grid), LinearArray.from_dict(meas.array))
    residual = op(torch.as_tensor(recon.images[method][:, None])).double().numpy() - meas.data
    expected = (residual**2).sum(axis=(1, 2)) / (meas.noise_sigma.astype(np.float64) ** 2 * residual[0].size)
    np.testing.assert_allclose(recon.per_scan[f"{method}_chi2"], expected, rtol=1e-4)


def test_evaluate_writes_metrics_for_every_group_and_method(run):
    d, _, _ = run
    metrics = json.loads((d / "report" / "metrics.json").read_text())
    assert set(metrics) == {"snr40dB", "snr20dB"}
    for group in metrics.values():
        assert set(group) == {"bp", "cgls", "tv"}
        assert all(np.isfinite(group[m]["psnr"]) and group[m]["n"] == 3 for m in group)
        assert all(group[m]["chi2"] > 0 and "chi2_std" in group[m] for m in group)
    for metric in ("psnr", "ssim", "chi2"):
        header = (d / "report" / "plots" / f"{metric}_per_scan.csv").read_text().splitlines()[0]
        assert header == "scan,group,bp,cgls,tv"
    assert len(list((d / "report" / "figures").glob("*.png"))) == 2


def test_reconstruct_rejects_nan_data_and_leaves_no_output(run, tmp_path, capsys):
    _, files, _ = run
    bad = tmp_path / "bad.h5"
    bad.write_bytes(files["meas"].read_bytes())
    with h5py.File(bad, "r+") as f:
        f["measurements/data"][1, 2, 3] = np.nan
    out = tmp_path / "out.h5"
    assert main(["reconstruct", str(bad), "--method", "bp", "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "bad.h5" in err and "/measurements/data" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def _log_chunks_and_writes(monkeypatch, fail_at: int | None = None) -> list:
    """Record each chunk computed and each chunk written, in order; the chunk starting at ``fail_at`` raises."""
    events = []
    compute, put = batch.reconstruct_chunk, hdf5io.ReconstructionWriter.put

    def chunk(job, start, stop):
        events.append(("chunk", start))
        if start == fail_at:
            raise PAReconError("this chunk fails", field="test")
        return compute(job, start, stop)

    def write(writer, start, *args, **kwargs):
        events.append(("write", start))
        return put(writer, start, *args, **kwargs)

    monkeypatch.setattr(batch, "reconstruct_chunk", chunk)
    monkeypatch.setattr(hdf5io.ReconstructionWriter, "put", write)
    return events


def test_reconstruct_writes_each_chunk_before_computing_the_next(run, tmp_path, monkeypatch):
    _, files, params = run
    events = _log_chunks_and_writes(monkeypatch)
    out = tmp_path / "tv.h5"
    assert main(["reconstruct", str(files["meas"]), "--method", "tv", "--params", str(params), "--out", str(out),
                 "--batch-size", "4", "--device", "cpu"]) == 0
    assert events == [("chunk", 0), ("write", 0), ("chunk", 4), ("write", 4)]
    ours, theirs = read_reconstructions(out), read_reconstructions(files["tv"])
    assert ours.attrs == theirs.attrs and ours.per_scan.keys() == theirs.per_scan.keys() == {"tv_chi2"}
    np.testing.assert_array_equal(ours.images["tv"], theirs.images["tv"])
    np.testing.assert_array_equal(ours.per_scan["tv_chi2"], theirs.per_scan["tv_chi2"])


def test_a_chunk_failing_after_others_were_written_leaves_the_previous_output(run, tmp_path, monkeypatch, capsys):
    _, files, params = run
    out = tmp_path / "tv.h5"
    out.write_bytes(files["bp"].read_bytes())
    events = _log_chunks_and_writes(monkeypatch, fail_at=4)
    assert main(["reconstruct", str(files["meas"]), "--method", "tv", "--params", str(params), "--out", str(out),
                 "--batch-size", "2", "--device", "cpu"]) == 2
    assert events == [("chunk", 0), ("write", 0), ("chunk", 2), ("write", 2), ("chunk", 4)]
    assert "test: this chunk fails" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [out] and out.read_bytes() == files["bp"].read_bytes()


def test_a_missing_vessel_mask_folder_names_the_params_key_that_gave_it(tmp_path, capsys):
    params = copy.deepcopy(PARAMS)
    params["phantoms"]["vessel_masks_dir"] = str(tmp_path / "drive")
    params["test_sets"]["masks"] = {"source": "vessel_masks", "n": 2, "seed": 1}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    assert main(["phantoms", "--params", str(tmp_path / "p.yaml"), "--set", "masks",
                 "--out", str(tmp_path / "ph.h5")]) == 2
    assert (f"{tmp_path / 'drive'}: root: vessel-mask folder does not exist (the path comes from "
            f"phantoms.vessel_masks_dir in {tmp_path / 'p.yaml'})") in capsys.readouterr().err
    assert not (tmp_path / "ph.h5").exists()


def test_a_vessel_mask_family_without_a_mask_folder_names_both_keys(tmp_path, capsys):
    params = copy.deepcopy(PARAMS)
    params["phantoms"].pop("vessel_masks_dir", None)
    params["test_sets"]["masks"] = {"source": "vessel_masks", "n": 2, "seed": 1}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    assert main(["phantoms", "--params", str(tmp_path / "p.yaml"), "--set", "masks",
                 "--out", str(tmp_path / "ph.h5")]) == 2
    assert (f"{tmp_path / 'p.yaml'}: phantoms.vessel_masks_dir: test_sets.masks.source is 'vessel_masks' but "
            "phantoms.vessel_masks_dir is not set") in capsys.readouterr().err
    assert not (tmp_path / "ph.h5").exists()


def test_missing_params_section_is_named(tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"geometry": PARAMS["geometry"], "test_sets": PARAMS["test_sets"]}))
    assert main(["phantoms", "--params", str(params), "--set", "tiny", "--out", str(tmp_path / "x.h5")]) == 2
    assert "p.yaml: phantoms: missing section" in capsys.readouterr().err


def test_a_section_spelled_almost_like_a_read_one_is_named(tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"geometry": PARAMS["geometry"], "test_sets": PARAMS["test_sets"],
                                      "phantom": PARAMS["phantoms"], "priors_other_tool": {}}))
    out = tmp_path / "x.h5"
    assert main(["phantoms", "--params", str(params), "--set", "tiny", "--out", str(out)]) == 2
    assert "p.yaml: phantoms: missing section (there is a section 'phantom')" in capsys.readouterr().err
    params.write_text(yaml.safe_dump({**yaml.safe_load(params.read_text()), "phantoms": PARAMS["phantoms"]}))
    assert main(["phantoms", "--params", str(params), "--set", "tiny", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "section 'phantom' is not read; the settings are in 'phantoms'" in err
    assert err.count("warning:") == 1 and "priors_other_tool" not in err
    assert out.is_file()


def test_unknown_test_set_is_named(run, tmp_path, capsys):
    _, _, params = run
    assert main(["phantoms", "--params", str(params), "--set", "nope", "--out", str(tmp_path / "x.h5")]) == 2
    assert "test_sets.nope" in capsys.readouterr().err


def _with(params: dict, dotted: str, value) -> dict:
    """A deep copy of ``params`` with the key path ``dotted`` set to ``value``."""
    changed = copy.deepcopy(params)
    *parents, last = dotted.split(".")
    node = changed
    for key in parents:
        node = node[key]
    node[last] = value
    return changed


@pytest.mark.parametrize("dotted, value, command, message", [
    ("geometry.array.fss", 2e7, "phantoms", "geometry.array: unknown settings ['fss']"),
    ("geometry.grid", {"nx": 16, "nz": 16}, "phantoms", "geometry.grid: missing settings ['dx']"),
    ("geometry.grid.dx", -1.0, "phantoms", "geometry.grid.dx: must be a finite number > 0, got -1.0"),
    ("phantoms.refin", 2, "phantoms", "phantoms: unknown settings ['refin']"),
    ("test_sets.tiny.nn", 4, "phantoms", "test_sets.tiny: unknown settings ['nn']"),
    ("simulate.sed", 3, "simulate", "simulate: unknown settings ['sed']"),
    ("simulate", {"snr_dbs": [40.0]}, "simulate", "simulate: unknown settings ['snr_dbs']"),
    ("simulate", {"seed": 1}, "simulate", "simulate: missing settings ['snr_db']"),
    ("reconstruct.mapp", {"steps": 3}, "reconstruct", "reconstruct: unknown settings ['mapp']"),
    ("reconstruct.map", {"stpes": 3}, "reconstruct", "reconstruct.map: unknown settings ['stpes'] for map"),
])
def test_a_typo_in_a_params_key_is_named_before_any_work(run, tmp_path, capsys, dotted, value, command, message):
    _, files, _ = run
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(_with(PARAMS, dotted, value)))
    out = tmp_path / "o.h5"
    args = {"phantoms": ["phantoms", "--set", "tiny"], "simulate": ["simulate", str(files["phantoms"])],
            "reconstruct": ["reconstruct", str(files["meas"]), "--method", "tv"]}[command]
    assert main([*args, "--params", str(params), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pa-recon: error: {params}: {message}") and "\n" not in err
    assert not out.exists()


def test_report_tables_every_set_and_group(run, tmp_path):
    d, _, _ = run
    out = tmp_path / "results.md"
    assert main(["report", str(d / "report" / "metrics.json"), "--out", str(out)]) == 0
    quality, consistency = (t.splitlines() for t in out.read_text().split("\n\n"))
    assert quality[0].startswith("| test set | group | n | bp PSNR")
    assert consistency[0].startswith("| test set | group | n | bp mean χ²")
    for rows in (quality, consistency):
        assert len(rows) == 4 and all(r.startswith("| report | snr") for r in rows[2:])


def test_unknown_method_setting_is_rejected(run, tmp_path, capsys):
    _, files, _ = run
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"reconstruct": {"tv": {"lamda": 1.0}}}))
    assert main(["reconstruct", str(files["meas"]), "--method", "tv", "--params", str(params),
                 "--out", str(tmp_path / "o.h5")]) == 2
    assert "lamda" in capsys.readouterr().err


def test_bad_method_setting_is_named_by_its_params_key_and_writes_nothing(run, tmp_path, capsys):
    _, files, _ = run
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"reconstruct": {"tv": {"n_iter": "many"}}}))
    out = tmp_path / "o.h5"
    assert main(["reconstruct", str(files["meas"]), "--method", "tv", "--params", str(params),
                 "--out", str(out)]) == 2
    assert "reconstruct.tv.n_iter: must be an integer >= 1, got 'many'" in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_ranks_methods_by_their_paired_gains(run, tmp_path, capsys):
    d, files, _ = run
    args = ["evaluate", str(files["meas"]), *(str(files[m]) for m in ("bp", "cgls", "tv")),
            "--plots", str(tmp_path / "p"), "--figures", str(tmp_path / "f"), "--n-figures", "0"]
    assert main([*args, "--metrics", str(tmp_path / "m.json"), "--ranking", "bp", "tv"]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    plain = json.loads((d / "report" / "metrics.json").read_text())
    for group in metrics:
        tv = metrics[group]["tv"]
        assert tv["psnr_gain_over_bp"] == pytest.approx(plain[group]["tv"]["psnr"] - plain[group]["bp"]["psnr"])
        assert 0 <= tv["ssim_won_over_bp"] <= 1 and "psnr_gain_over_bp" not in metrics[group]["bp"]
    assert main([*args, "--metrics", str(tmp_path / "bad.json"), "--ranking", "bp", "map"]) == 2
    assert "ranking" in capsys.readouterr().err and not (tmp_path / "bad.json").exists()


def test_evaluate_without_plots_or_figures_writes_the_metrics_alone(run, tmp_path, monkeypatch):
    d, files, _ = run
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(files["meas"]), *(str(files[m]) for m in ("bp", "cgls", "tv")),
                 "--metrics", "m.json"]) == 0
    assert json.loads((tmp_path / "m.json").read_text()) == json.loads((d / "report" / "metrics.json").read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_a_prior_given_to_bp_is_ignored_with_a_warning_and_not_recorded(run, tmp_path, capsys):
    _, files, _ = run
    out = tmp_path / "bp.h5"
    assert main(["reconstruct", str(files["meas"]), "--method", "bp", "--prior", "priors/none.pt", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert "pa-recon: warning: method 'bp' uses no prior; --prior priors/none.pt is ignored" in capsys.readouterr().err
    assert read_reconstructions(out).attrs["prior"] == ""


def test_evaluate_refuses_a_reconstruction_on_another_grid(run, tmp_path, capsys):
    _, files, _ = run
    other = tmp_path / "other_dx.h5"
    recon = read_reconstructions(files["bp"])
    write_reconstructions(other, recon.images, {**recon.grid, "dx": 2 * recon.grid["dx"]}, "elsewhere.h5")
    assert main(["evaluate", str(files["meas"]), str(other), "--metrics", str(tmp_path / "m.json")]) == 2
    assert "other_dx.h5: /grid: grid" in capsys.readouterr().err and not (tmp_path / "m.json").exists()


def test_evaluate_refuses_a_reconstruction_of_other_data_of_the_same_shape(run, tmp_path, capsys):
    _, files, params = run
    recon = read_reconstructions(files["tv"])
    assert recon.source_digest == data_digest(files["meas"])
    other = tmp_path / "meas.h5"
    meas = read_measurements(files["meas"])
    write_measurements(other, meas.data[::-1].copy(), meas.array, meas.grid, meas.noise_sigma, p0=meas.p0,
                       snr_db=meas.snr_db)
    assert main(["evaluate", str(other), str(files["tv"]), "--metrics", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert f"{files['tv']}: /@source_data_sha256: reconstructs other data than {other}" in err
    assert not (tmp_path / "m.json").exists()


def test_evaluate_takes_a_reconstruction_without_a_digest_with_a_warning(run, tmp_path, capsys):
    d, files, _ = run
    old = tmp_path / "tv.h5"
    recon = read_reconstructions(files["tv"])
    write_reconstructions(old, recon.images, recon.grid, recon.source_measurements, per_scan=recon.per_scan)
    assert main(["evaluate", str(files["meas"]), str(files["bp"]), str(files["cgls"]), str(old),
                 "--metrics", str(tmp_path / "m.json")]) == 0
    assert f"warning: {old} does not record which data it reconstructs" in capsys.readouterr().err
    assert json.loads((tmp_path / "m.json").read_text()) == json.loads((d / "report" / "metrics.json").read_text())


def test_evaluate_needs_ground_truth(run, tmp_path, capsys):
    _, files, _ = run
    meas = read_measurements(files["meas"])
    no_truth = tmp_path / "nt.h5"
    write_measurements(no_truth, meas.data, meas.array, meas.grid, meas.noise_sigma)
    assert main(["evaluate", str(no_truth), str(files["bp"]), "--metrics", str(tmp_path / "m.json"),
                 "--plots", str(tmp_path / "p"), "--figures", str(tmp_path / "f")]) == 2
    assert "/ground_truth/p0" in capsys.readouterr().err


def test_import_ipasc_writes_a_reconstructable_measurement_file(run, tmp_path):
    _, _, params = run
    data = np.random.default_rng(0).normal(scale=0.3, size=(16, 64, 1, 2))
    ipasc = write_pacfish_file(tmp_path / "scan.hdf5", data, line_positions(16, 2e-4), fs=20e6)
    meas_path, recon_path = tmp_path / "meas.h5", tmp_path / "recon.h5"
    assert main(["import-ipasc", str(ipasc), "--params", str(params), "--out", str(meas_path)]) == 0
    meas = read_measurements(meas_path)
    assert meas.data.shape == (2, 16, 64) and meas.grid == PARAMS["geometry"]["grid"]
    np.testing.assert_allclose(meas.noise_sigma, 0.3, rtol=0.1)
    assert main(["reconstruct", str(meas_path), "--method", "bp", "--out", str(recon_path), "--device", "cpu"]) == 0
    assert read_reconstructions(recon_path).images["bp"].shape == (2, 16, 16)


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/gpu.yaml"])
def test_shipped_profiles_hold_valid_method_settings(profile):
    path = Path(__file__).resolve().parents[2] / profile
    sections = yaml.safe_load(path.read_text())["reconstruct"]
    assert {"bp", "tv", "map", "map_latent", "posterior"} <= set(sections)
    for method, overrides in sections.items():
        settings = method_settings(method, overrides)
        assert {key: settings[key] for key in overrides} == overrides


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/gpu.yaml"])
def test_shipped_profiles_split_every_test_set_evenly_over_their_workers(profile):
    """dvc.yaml passes the chunks section to reconstruct; the options parse, and each worker gets as many chunks."""
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / profile).read_text())
    chunks = params["chunks"]
    args = build_parser().parse_args(["reconstruct", "m.h5", "--method", "map", "--out", "r.h5",
                                      "--batch-size", str(chunks["size"]), "--scheduler", chunks["scheduler"],
                                      "--workers", str(chunks["workers"])])
    assert args.workers >= 1 and args.batch_size >= 1
    assert args.scheduler == "distributed" or args.workers == 1
    for test_set in params["test_sets"].values():
        scans = test_set["n"] * len(params["simulate"]["snr_db"])
        assert scans % chunks["size"] == 0 and (scans // chunks["size"]) % chunks["workers"] == 0


def test_import_ipasc_estimates_the_noise_above_the_params_sensor_band(tmp_path):
    """A strong in-band tone (2 MHz at 20 MHz sampling) plus white noise of std 0.3: the spectrum above the params'
    2 MHz band holds only the noise, while second differences of the tone would read several times too high."""
    params = copy.deepcopy(PARAMS)
    params["geometry"]["array"].update(center_frequency=2e6, fractional_bandwidth=0.5)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    rng = np.random.default_rng(1)
    t = np.arange(64) / 20e6
    tone = 10 * np.sin(2 * np.pi * 2e6 * t + rng.uniform(0, 2 * np.pi, (16, 1)))
    data = (tone[:, :, None, None] + rng.normal(scale=0.3, size=(16, 64, 1, 2)))
    ipasc = write_pacfish_file(tmp_path / "scan.hdf5", data, line_positions(16, 2e-4), fs=20e6)
    assert main(["import-ipasc", str(ipasc), "--params", str(path), "--out", str(tmp_path / "meas.h5")]) == 0
    np.testing.assert_allclose(read_measurements(tmp_path / "meas.h5").noise_sigma, 0.3, rtol=0.15)
