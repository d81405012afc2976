"""train-prior → reconstruct with a prior (MAP, posterior) → evaluate, on a tiny geometry with tracking off."""

import copy
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from interruptions import interrupted_after

from pa_recon.batch import file_sha256
from pa_recon.cli import main
from pa_recon.cli import priors as cli_priors
from pa_recon.data.hdf5io import read_reconstructions, write_reconstructions
from pa_recon.priors import FlowPrior, load_prior, training
from pa_recon.priors.training import TRAINING_SET_FILE
from pa_recon.recon import START_KINDS, STOP_REASONS
from pa_recon.recon import map as map_module

TRAIN = {"max_steps": 3, "batch_size": 4, "val_every": 0, "sample_every": 0, "checkpoint_every": 0,
         "tracking": False, "progress": False, "device": "cpu"}
FLOW = {"architecture": "glow", "levels": 2, "steps": 1, "subnet": {"kind": "resnet", "hidden": 8, "blocks": 1}}
PARAMS = {
    "geometry": {"grid": {"nx": 16, "nz": 16, "dx": 2e-4},
                 "array": {"n_elements": 16, "pitch": 2e-4, "fs": 20e6, "n_samples": 48}},
    "phantoms": {"refine": 2},
    "test_sets": {"tiny": {"n": 2, "seed": 3}},
    "simulate": {"snr_db": [30.0], "seed": 1},
    "priors": {"data": {"n": 8, "seed": 2, "snr_db_range": [25.0, 35.0]},
               "flow": {"marginal": FLOW, "conditional": {**FLOW, "encoder": "unet", "cond_features": 4,
                                                          "encoder_width": 4}},
               "train": {"marginal": TRAIN, "conditional": TRAIN}},
    "reconstruct": {"map": {"steps": 5, "latent_steps": 5}, "map_latent": {"steps": 5},
                    "posterior": {"n_samples": 4, "chunk": 2}},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("priors")
    params = d / "params.yaml"
    params.write_text(yaml.safe_dump(PARAMS))
    for kind in ("marginal", "conditional"):
        assert main(["train-prior", "--kind", kind, "--params", str(params), "--out-dir", str(d / kind),
                     "--device", "cpu"]) == 0
    assert main(["phantoms", "--params", str(params), "--set", "tiny", "--out", str(d / "ph.h5")]) == 0
    assert main(["simulate", str(d / "ph.h5"), "--params", str(params), "--out", str(d / "meas.h5"),
                 "--device", "cpu"]) == 0
    return d, params


@pytest.mark.parametrize("change, message", [
    (lambda p: p["priors"].update(alpah=0.1), "priors: unknown settings ['alpah']"),
    (lambda p: p["priors"]["data"].update(nn=8), "priors.data: unknown settings ['nn']"),
    (lambda p: p["priors"]["data"].pop("snr_db_range"), "priors.data: missing settings ['snr_db_range']"),
    (lambda p: p["priors"]["train"].pop("conditional"), "priors.train: missing settings ['conditional']"),
    (lambda p: p["priors"]["train"]["conditional"].update(max_stpes=3),
     "priors.train.conditional.max_stpes: unknown training option(s)"),
    (lambda p: p["priors"]["flow"]["conditional"]["subnet"].update(hiden=8),
     "priors.flow.conditional.subnet.hiden: unknown subnet settings ['hiden']"),
    (lambda p: p["priors"]["flow"]["conditional"].update(architecture="foo"),
     "priors.flow.conditional.architecture: 'foo' is not one of"),
    (lambda p: p["priors"]["flow"]["conditional"].update(levels=6),
     "priors.flow.conditional.shape: 6 glow levels need height and width divisible by 64"),
    (lambda p: p["priors"]["data"].update(n=2),
     "priors.data.n: 2 items leave 2 for training after 0 for validation, fewer than one batch of 4"),
    (lambda p: p["priors"]["data"].update(n="8"), "priors.data.n: must be an integer >= 1, got '8'"),
    (lambda p: p["priors"]["data"].update(seed=-1), "priors.data.seed: must be an integer >= 0, got -1"),
    (lambda p: p["priors"]["data"].update(snr_db_range=[35.0, 25.0]),
     "priors.data.snr_db_range: must be an increasing pair of finite numbers, got [35.0, 25.0]"),
    (lambda p: p["priors"]["data"].update(vessels={"densty": 2}), "priors.data.vessels: unknown settings ['densty']"),
    (lambda p: p["priors"]["data"].update(vessels={"density": "2"}),
     "priors.data.vessels.density: must be a finite number, got '2'"),
    (lambda p: p["priors"].update(alpha=0.7), "priors.alpha: alpha must lie in (0, 0.5), got 0.7"),
    (lambda p: p["phantoms"].update(refine=0), "phantoms.refine: must be an integer >= 1, got 0"),
    (lambda p: p["priors"]["train"]["conditional"].update(cpu_threads=0),
     "priors.train.conditional.cpu_threads: must be an integer >= 1, got 0"),
    (lambda p: p["priors"]["train"]["conditional"].update(device="cuda"),
     "priors.train.conditional.device: CUDA was asked for but is not available"),
    (lambda p: p["priors"]["train"]["conditional"].update(tracking=True, tracking_uri="mlruns"),
     "priors.train.conditional.tracking_uri: MLflow cannot use 'mlruns': The filesystem tracking backend"),
])
def test_a_wrong_priors_setting_is_named_before_the_data_are_made(tmp_path, capsys, monkeypatch, change, message):
    monkeypatch.setattr(cli_priors, "make_training_pairs", lambda *a, **k: pytest.fail("made training data"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    params = copy.deepcopy(PARAMS)
    change(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    assert main(["train-prior", "--kind", "conditional", "--params", str(path), "--out-dir", str(tmp_path / "c"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pa-recon: error: {path}: {message}") and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_training_runs_on_the_cpu_threads_its_params_ask_for(tmp_path, monkeypatch, restore_threads):
    """The count is applied before the data are made, recorded with the hardware, and is not a training option."""
    params = copy.deepcopy(PARAMS)
    params["priors"]["train"]["marginal"] = {**TRAIN, "cpu_threads": 3}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    threads_when_made = []
    make = cli_priors.make_training_images

    def spy(*args, **kwargs):
        threads_when_made.append(torch.get_num_threads())
        return make(*args, **kwargs)

    monkeypatch.setattr(cli_priors, "make_training_images", spy)
    torch.set_num_threads(1)
    assert main(["train-prior", "--kind", "marginal", "--params", str(path), "--out-dir", str(tmp_path / "m"),
                 "--device", "cpu"]) == 0
    assert threads_when_made == [3] and torch.get_num_threads() == 3
    record = json.loads((tmp_path / "m" / "run.json").read_text())
    assert [name.endswith("(3 threads)") for name in record["hardware"]] == [True]
    assert "cpu_threads" not in json.dumps(record["settings"])


def test_map_and_posterior_with_trained_priors_are_evaluated(trained):
    d, params = trained
    # A method named with its prior's kind gets the output name <method>_<kind>; a bare one takes --name.
    runs = [("map-marginal", "marginal", "map_marginal"), ("map_latent", "conditional", "map_latent_conditional"),
            ("posterior-conditional", "conditional", "posterior")]
    for method, kind, name in runs:
        named = [] if method.replace("-", "_") == name else ["--name", name]
        assert main(["reconstruct", str(d / "meas.h5"), "--method", method, "--prior", str(d / kind / "prior.pt"),
                     *named, "--params", str(params), "--out", str(d / f"{name}.h5"), "--device", "cpu"]) == 0
    post = read_reconstructions(d / "posterior.h5")
    assert set(post.maps) == {"posterior_std", "posterior_presence", "posterior_flag_score", "posterior_flags"}
    assert np.all(post.maps["posterior_std"] >= 0)
    assert set(post.per_scan) == {"posterior_chi2", "posterior_acceptance", "posterior_samples",
                                  "posterior_chi2_median", "posterior_scan_flag"}
    assert post.per_scan["posterior_scan_flag"].dtype == bool
    np.testing.assert_array_equal(post.per_scan["posterior_scan_flag"],
                                  (np.abs(post.per_scan["posterior_chi2"] - 1) > 0.5)
                                  | (post.per_scan["posterior_acceptance"] == 0))
    mapped = read_reconstructions(d / "map_marginal.h5")
    assert set(mapped.per_scan) == {"map_marginal_chi2", "map_marginal_stop_reason", "map_marginal_steps",
                                    "map_marginal_objective", "map_marginal_start"}
    assert mapped.labels == {"map_marginal_stop_reason": STOP_REASONS, "map_marginal_start": START_KINDS}
    assert mapped.attrs["prior"] == str(d / "marginal" / "prior.pt") and mapped.attrs["method"] == "map-marginal"
    assert np.all(mapped.per_scan["map_marginal_steps"] <= 5)
    assert main(["evaluate", str(d / "meas.h5"), *(str(d / f"{n}.h5") for *_, n in runs),
                 "--metrics", str(d / "m.json"), "--plots", str(d / "plots"), "--figures", str(d / "figs"),
                 "--n-figures", "1"]) == 0
    metrics = json.loads((d / "m.json").read_text())["snr30dB"]
    assert set(metrics) == {"map_marginal", "map_latent_conditional", "posterior"}
    assert 0 <= metrics["posterior"]["coverage95"] <= 1 and "flag_auroc" in metrics["posterior"]
    assert 0 <= metrics["posterior"]["scan_flag"] <= 1 and metrics["posterior"]["chi2"] > 0
    assert sum(metrics["map_marginal"][f"stop_reason_{r}"] for r in STOP_REASONS) == pytest.approx(1)
    assert metrics["map_marginal"]["start_tv"] == 1
    csv = (d / "plots" / "chi2_per_scan.csv").read_text().splitlines()[0]
    assert csv == "scan,group,map_marginal,map_latent_conditional,posterior"


def _reconstruct(d, method: str, kind: str, params, out, *extra: str) -> int:
    """One scan a chunk: a latent start is read chunk by chunk, and the chunk size moves the last bits."""
    return main(["reconstruct", str(d / "meas.h5"), "--method", method, "--prior", str(d / kind / "prior.pt"),
                 "--params", str(params), "--out", str(out), "--device", "cpu", "--batch-size", "1", *extra])


def _assert_same_reconstructions(a, b):
    a, b = read_reconstructions(a), read_reconstructions(b)
    for name in a.images:
        np.testing.assert_array_equal(a.images[name], b.images[name])
    assert a.per_scan.keys() == b.per_scan.keys()
    for name in a.per_scan:
        np.testing.assert_array_equal(a.per_scan[name], b.per_scan[name])


@pytest.fixture(scope="module")
def latent_start(trained):
    """The conditional prior's latent MAP of the measurements, and the map-conditional images computed without it."""
    d, params = trained
    assert _reconstruct(d, "map_latent-conditional", "conditional", params, d / "latent.h5") == 0
    assert _reconstruct(d, "map-conditional", "conditional", params, d / "map_computed.h5") == 0
    return d / "latent.h5", d / "map_computed.h5"


def test_map_takes_a_latent_map_file_as_its_latent_start_with_the_same_result(trained, latent_start, tmp_path,
                                                                              monkeypatch, capsys):
    d, params = trained
    latent, computed = latent_start
    assert read_reconstructions(latent).attrs["prior_sha256"] == file_sha256(str(d / "conditional" / "prior.pt"))
    monkeypatch.setattr(map_module, "latent_descent", lambda *a, **k: pytest.fail("ran the latent descent"))
    assert _reconstruct(d, "map-conditional", "conditional", params, tmp_path / "o.h5",
                        "--latent-start", str(latent)) == 0
    assert "warning" not in capsys.readouterr().err
    _assert_same_reconstructions(tmp_path / "o.h5", computed)
    # A start that is no latent MAP takes no images: the marginal prior starts from TV, silently.
    assert _reconstruct(d, "map-marginal", "marginal", params, tmp_path / "m.h5", "--latent-start", str(latent)) == 0
    assert "warning" not in capsys.readouterr().err
    assert read_reconstructions(tmp_path / "m.h5").per_scan["map_marginal_start"].tolist() == (
        [START_KINDS.index("tv")] * 2)


@pytest.mark.parametrize("case, reason", [
    ("latent_steps", "its latent MAP ran AdamSettings(steps=5"),
    ("model_error", "its latent MAP ran with model_error 0.0, this run's latent start takes 0.1"),
    ("marginal prior", "it was not made with the prior"),
    ("other data", "it was not made from the data of"),
    ("a tv file", "it holds a tv reconstruction, not a map_latent one"),
    ("a setting of another version",
     "its settings are not map_latent settings of this version: unknown settings ['momentum']"),
])
def test_a_latent_map_file_made_otherwise_is_not_used_and_the_start_is_computed(trained, latent_start, tmp_path,
                                                                                 capsys, case, reason):
    d, params = trained
    latent, computed = latent_start
    settings = yaml.safe_load(params.read_text())
    if case in ("latent_steps", "model_error"):
        settings["reconstruct"]["map"].update({"latent_steps": 4} if case == "latent_steps" else {"model_error": 0.1})
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump(settings))
        computed = tmp_path / "computed.h5"
        assert _reconstruct(d, "map-conditional", "conditional", params, computed) == 0
    elif case == "marginal prior":
        latent = tmp_path / "latent_marginal.h5"
        assert _reconstruct(d, "map_latent-marginal", "marginal", params, latent) == 0
    elif case == "other data":
        other = tmp_path / "other.yaml"
        other.write_text(yaml.safe_dump({**settings, "simulate": {"snr_db": [30.0], "seed": 2}}))
        assert main(["simulate", str(d / "ph.h5"), "--params", str(other), "--out", str(tmp_path / "meas.h5"),
                     "--device", "cpu"]) == 0
        latent = tmp_path / "latent_other.h5"
        assert main(["reconstruct", str(tmp_path / "meas.h5"), "--method", "map_latent", "--prior",
                     str(d / "conditional" / "prior.pt"), "--params", str(params), "--out", str(latent),
                     "--device", "cpu"]) == 0
    elif case == "a tv file":
        latent = tmp_path / "tv.h5"
        assert main(["reconstruct", str(d / "meas.h5"), "--method", "tv", "--out", str(latent)]) == 0
    else:
        latent = Path(shutil.copy(latent, tmp_path / "newer.h5"))
        with h5py.File(latent, "a") as f:
            f.attrs["settings_momentum"] = "0.9"
    capsys.readouterr()
    assert _reconstruct(d, "map-conditional", "conditional", params, tmp_path / "o.h5",
                        "--latent-start", str(latent)) == 0
    err = capsys.readouterr().err
    assert f"pa-recon: warning: {latent}: {reason}" in err and "the latent start is computed instead" in err
    _assert_same_reconstructions(tmp_path / "o.h5", computed)


def test_a_latent_start_file_that_cannot_serve_is_refused_before_any_output(trained, latent_start, tmp_path,
                                                                              capsys):
    d, params = trained
    latent, _ = latent_start
    two = tmp_path / "two.h5"
    recon = read_reconstructions(latent)
    image = recon.images["map_latent_conditional"]
    write_reconstructions(two, {"a": image, "b": image}, recon.grid, "meas.h5", attrs={"method": "map_latent"},
                          source_digest=recon.source_digest)
    for path, message in ((tmp_path / "missing.h5", "missing.h5"),
                          (two, "holds 2 reconstructions; a latent start needs a file of one"),
                          (d / "meas.h5", "meas.h5")):
        assert _reconstruct(d, "map-marginal", "marginal", params, tmp_path / "o.h5", "--latent-start",
                            str(path)) == 2
        err = capsys.readouterr().err
        assert err.startswith("pa-recon: error: ") and message in err
        assert not (tmp_path / "o.h5").exists()


def test_method_without_prior_and_prior_of_another_geometry_are_refused(trained, tmp_path, capsys):
    d, params = trained
    assert main(["reconstruct", str(d / "meas.h5"), "--method", "map", "--out", str(tmp_path / "o.h5")]) == 2
    assert "--prior" in capsys.readouterr().err
    other = yaml.safe_load(params.read_text())
    other["geometry"]["grid"]["dx"] = 1e-4
    other_params = tmp_path / "other.yaml"
    other_params.write_text(yaml.safe_dump(other))
    assert main(["phantoms", "--params", str(other_params), "--set", "tiny", "--out", str(tmp_path / "ph.h5")]) == 0
    assert main(["simulate", str(tmp_path / "ph.h5"), "--params", str(other_params), "--out",
                 str(tmp_path / "meas.h5"), "--device", "cpu"]) == 0
    assert main(["reconstruct", str(tmp_path / "meas.h5"), "--method", "map", "--prior",
                 str(d / "marginal" / "prior.pt"), "--out", str(tmp_path / "o.h5"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "prior.pt: geometry:" in err and "--allow-geometry-mismatch" in err
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("method, kind, message", [
    ("map-conditional", "marginal", "'map-conditional' needs a conditional prior, not a marginal one"),
    ("map_latent-marginal", "conditional", "'map_latent-marginal' needs a marginal prior, not a conditional one"),
    ("posterior", "marginal", "'posterior' needs a conditional prior, not a marginal one"),
])
def test_a_prior_of_the_wrong_kind_is_refused_before_any_output(trained, tmp_path, capsys, method, kind, message):
    d, params = trained
    out = tmp_path / "o.h5"
    assert main(["reconstruct", str(d / "meas.h5"), "--method", method, "--prior", str(d / kind / "prior.pt"),
                 "--params", str(params), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{d / kind / 'prior.pt'}: --prior: method {message}" in err
    assert not out.exists()


def test_an_unknown_method_name_lists_the_known_ones(trained, tmp_path, capsys):
    d, _ = trained
    assert main(["reconstruct", str(d / "meas.h5"), "--method", "tv-conditional", "--out",
                 str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'tv-conditional'" in err and "map-conditional" in err and "posterior-marginal" not in err
    assert not (tmp_path / "o.h5").exists()


def test_compiled_prior_passes_reconstruct_the_same_images(trained, tmp_path, monkeypatch):
    d, params = trained
    compiled_priors = []
    compile_passes = FlowPrior.compile_passes

    def spy(prior):
        compiled_priors.append(prior.source)
        return compile_passes(prior)

    monkeypatch.setattr(FlowPrior, "compile_passes", spy)
    for flag in ([], ["--compile"]):
        assert main(["reconstruct", str(d / "meas.h5"), "--method", "map-marginal", "--prior",
                     str(d / "marginal" / "prior.pt"), "--params", str(params), "--out",
                     str(tmp_path / f"o{len(flag)}.h5"), "--device", "cpu", *flag]) == 0
    eager, compiled = (read_reconstructions(tmp_path / f"o{i}.h5") for i in (0, 1))
    assert compiled_priors == [str(d / "marginal" / "prior.pt")]
    np.testing.assert_allclose(compiled.images["map_marginal"], eager.images["map_marginal"], atol=1e-5)
    np.testing.assert_array_equal(compiled.per_scan["map_marginal_steps"], eager.per_scan["map_marginal_steps"])


def test_an_interrupted_training_resumes_on_its_kept_data_and_ends_as_an_uninterrupted_one(
        tmp_path, monkeypatch, capsys):
    params = tmp_path / "params.yaml"
    settings = {**PARAMS, "priors": {**PARAMS["priors"], "train": {"conditional": {**TRAIN, "checkpoint_every": 1}}}}
    params.write_text(yaml.safe_dump(settings))

    def train(out):
        return main(["train-prior", "--kind", "conditional", "--params", str(params), "--out-dir", str(out),
                     "--device", "cpu"])

    assert train(tmp_path / "straight") == 0
    loss_fn = training._loss_fn
    monkeypatch.setattr(training, "_loss_fn", lambda dequant_sigma: interrupted_after(3, loss_fn(dequant_sigma)))
    assert train(tmp_path / "resumed") == 130
    assert capsys.readouterr().err.strip() == ("pa-recon: interrupted; run the same command again to resume from the "
                                               "last checkpoint")
    assert (tmp_path / "resumed" / TRAINING_SET_FILE).is_file()
    monkeypatch.setattr(training, "_loss_fn", loss_fn)

    def not_again(*args, **kwargs):
        raise AssertionError("the kept training set should have been used")

    monkeypatch.setattr(cli_priors, "make_training_pairs", not_again)
    assert train(tmp_path / "resumed") == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'resumed'}: resuming from step 2\n")
    assert not (tmp_path / "resumed" / TRAINING_SET_FILE).exists()
    straight, resumed = (load_prior(tmp_path / name / "prior.pt").state_dict() for name in ("straight", "resumed"))
    assert all(torch.equal(value, resumed[name]) for name, value in straight.items())
