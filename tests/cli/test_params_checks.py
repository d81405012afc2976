"""Params files as the user writes them: YAML 1.2 floats, one-line YAML errors, and wrong settings of phantoms and
simulate named by file and key path before any work."""

import copy
import math

import numpy as np
import pytest
import yaml

from pa_recon.cli import main
from pa_recon.cli.common import load_params
from pa_recon.data.hdf5io import read_measurements

PARAMS = {
    "geometry": {"grid": {"nx": 8, "nz": 8, "dx": 2e-4},
                 "array": {"n_elements": 8, "pitch": 2e-4, "fs": 20e6, "n_samples": 32}},
    "phantoms": {"refine": 2},
    "test_sets": {"tiny": {"n": 2, "seed": 5, "vessels": {"density": 1.5}}},
    "simulate": {"snr_db": [40.0], "seed": 1},
}


def write_params(path, change=lambda p: None):
    params = copy.deepcopy(PARAMS)
    change(params)
    path.write_text(yaml.safe_dump(params))
    return path


def test_exponents_without_a_dot_are_floats_and_quoted_numbers_stay_strings(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text('s: {a: 1e-3, b: 3e7, c: 15e-2, d: -2E+2, e: .5, f: 1., g: 7, h: .inf, i: "1e-3", j: "0.001"}\n')
    values = load_params(path, "s")
    assert values == {"a": 0.001, "b": 3e7, "c": 0.15, "d": -200.0, "e": 0.5, "f": 1.0, "g": 7, "h": math.inf,
                      "i": "1e-3", "j": "0.001"}
    assert [type(values[k]) for k in "abcg"] == [float, float, float, int]


def test_invalid_yaml_is_one_line_naming_line_and_column(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("geometry: [1, 2\n")
    assert main(["phantoms", "--params", str(path), "--set", "tiny", "--out", str(tmp_path / "ph.h5")]) == 2
    assert capsys.readouterr().err == (f"pa-recon: error: {path}: not valid YAML: line 2, column 1: expected ',' or "
                                       "']', but got '<stream end>' (while parsing a flow sequence from line 1, "
                                       "column 11)\n")


def test_a_params_file_that_is_not_text_is_named(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"geometry: \xff\n")
    assert main(["phantoms", "--params", str(path), "--set", "tiny", "--out", str(tmp_path / "ph.h5")]) == 2
    assert capsys.readouterr().err == (f"pa-recon: error: {path}: cannot read params file (not UTF-8 text: invalid "
                                       "start byte at byte 10)\n")


@pytest.mark.parametrize("change, message", [
    (lambda p: p["geometry"]["grid"].update(dx="0.0002"), "geometry.grid.dx: must be a finite number, got '0.0002'"),
    (lambda p: p["geometry"]["array"].update(pitch="0.0002"),
     "geometry.array.pitch: must be a finite number, got '0.0002'"),
    (lambda p: p["geometry"]["array"].update(n_samples="32"),
     "geometry.array.n_samples: must be an integer >= 1, got '32'"),
    (lambda p: p["geometry"]["array"].update(z_array=math.inf),
     "geometry.array.z_array: must be a finite number, got inf"),
    (lambda p: p["test_sets"]["tiny"]["vessels"].update(densty=2),
     "test_sets.tiny.vessels: unknown settings ['densty']; known: ["),
    (lambda p: p["test_sets"]["tiny"]["vessels"].update(density="x"),
     "test_sets.tiny.vessels.density: must be a finite number, got 'x'"),
    (lambda p: p["test_sets"]["tiny"]["vessels"].update(n_trees=3),
     "test_sets.tiny.vessels.n_trees: must be a list of 2 numbers, got 3"),
    (lambda p: p["test_sets"]["tiny"]["vessels"].update(bend=-1.0), "test_sets.tiny.vessels.bend: bend must be >= 0"),
    (lambda p: p["test_sets"]["tiny"].update(n=0), "test_sets.tiny.n: must be an integer >= 1, got 0"),
    (lambda p: p["test_sets"]["tiny"].update(seed="5"), "test_sets.tiny.seed: must be an integer >= 0, got '5'"),
    (lambda p: p["phantoms"].update(refine=0), "phantoms.refine: must be an integer >= 1, got 0"),
])
def test_a_wrong_phantoms_setting_is_named_by_its_key(tmp_path, capsys, change, message):
    path = write_params(tmp_path / "params.yaml", change)
    out = tmp_path / "ph.h5"
    assert main(["phantoms", "--params", str(path), "--set", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pa-recon: error: {path}: {message}") and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("change, message", [
    (lambda p: p["simulate"].update(snr_db="40"), "simulate.snr_db: must be a finite number, got '40'"),
    (lambda p: p["simulate"].update(snr_db=[40.0, "abc"]), "simulate.snr_db: must be a finite number, got 'abc'"),
    (lambda p: p["simulate"].update(snr_db=[]), "simulate.snr_db: must be a non-empty list of numbers"),
    (lambda p: p["simulate"].update(snr_db=[math.nan]), "simulate.snr_db: must be a finite number, got nan"),
    (lambda p: p["simulate"].update(seed=1.5), "simulate.seed: must be an integer >= 0, got 1.5"),
])
def test_a_wrong_simulate_setting_is_named_before_the_phantoms_are_read(tmp_path, capsys, change, message):
    path = write_params(tmp_path / "params.yaml", change)
    out = tmp_path / "meas.h5"
    assert main(["simulate", str(tmp_path / "missing.h5"), "--params", str(path), "--out", str(out),
                 "--device", "cpu"]) == 2
    assert capsys.readouterr().err == f"pa-recon: error: {path}: {message}\n"
    assert not out.exists()


def test_one_snr_is_simulated_as_a_list_of_one(tmp_path):
    path = write_params(tmp_path / "params.yaml", lambda p: p["simulate"].update(snr_db=30))
    assert main(["phantoms", "--params", str(path), "--set", "tiny", "--out", str(tmp_path / "ph.h5")]) == 0
    assert main(["simulate", str(tmp_path / "ph.h5"), "--params", str(path), "--out", str(tmp_path / "meas.h5"),
                 "--device", "cpu"]) == 0
    np.testing.assert_array_equal(read_measurements(tmp_path / "meas.h5").snr_db, [30.0, 30.0])
