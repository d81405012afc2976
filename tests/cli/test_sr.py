"""``pa-recon sr``: super-resolve a user's image with a saved SR flow; user errors name the file."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pa_recon.cli import sr
from pa_recon.errors import PAReconError
from pa_recon.train import TrainConfig
from pa_recon.bench import image_flows
from pa_recon.bench.sr_flow import train_sr

MODEL = {"flow": {"levels": 2, "steps": 1, "subnet": {"hidden": 8, "blocks": 1}, "encoder": "rrdb",
                  "encoder_width": 8, "encoder_blocks": 1, "cond_features": 4, "split_prior": "conditional",
                  "injector": True}}


def run(*argv: str) -> None:
    parser = argparse.ArgumentParser()
    sr.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    args.func(args)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A flow trained for two steps (the saved checkpoint) and a 7×5 RGB PNG."""
    d = tmp_path_factory.mktemp("sr")
    gen = torch.Generator().manual_seed(0)
    hr = torch.randint(0, 256, (8, 3, 16, 16), generator=gen, dtype=torch.uint8)
    lr = torch.randint(0, 256, (8, 3, 4, 4), generator=gen, dtype=torch.uint8)
    config = TrainConfig(out_dir=str(d / "flow"), max_steps=2, batch_size=4, device="cpu", progress=False,
                         tracking=False)
    train_sr("flow", MODEL, config, (hr, lr), None, scale=4)
    image = d / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)).save(image)
    return d, image


def test_sr_writes_the_requested_number_of_samples_at_four_times_the_size(files):
    d, image = files
    out = d / "out"
    run("sr", str(image), "--scale", "4", "--temperature", "0.8", "--samples", "3", "--out", str(out),
        "--checkpoint", str(d / "flow"), "--device", "cpu")
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == [f"photo_x4_t0.8_{k}.png" for k in range(3)]
    arrays = [np.asarray(Image.open(p)) for p in written]
    assert all(a.shape == (20, 28, 3) and a.dtype == np.uint8 for a in arrays)
    assert not np.array_equal(arrays[0], arrays[1])


def test_sr_gives_a_grey_image_grey_outputs_the_mean_of_the_models_channels(files):
    d, _ = files
    levels = np.random.default_rng(1).integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(levels).save(d / "grey.png")
    Image.fromarray(np.repeat(levels[..., None], 3, axis=-1)).save(d / "rgb.png")
    for name in ("grey", "rgb"):
        run("sr", str(d / f"{name}.png"), "--temperature", "0", "--out", str(d / "levels"),
            "--checkpoint", str(d / "flow"), "--device", "cpu")
    grey = Image.open(d / "levels" / "grey_x4_t0_0.png")
    rgb = np.asarray(Image.open(d / "levels" / "rgb_x4_t0_0.png")).astype(float)
    assert grey.mode == "L" and grey.size == (28, 20)
    assert np.ptp(rgb, axis=-1).max() > 0  # the model's channels differ, so the grey image is their mean
    np.testing.assert_allclose(np.asarray(grey), rgb.mean(axis=-1), atol=1)


def test_sr_errors_name_the_file(files):
    d, image = files
    common = ["--out", str(d / "bad"), "--checkpoint", str(d / "flow"), "--device", "cpu"]
    with pytest.raises(PAReconError, match="missing.png"):
        run("sr", str(d / "missing.png"), *common)
    text = d / "notes.png"
    text.write_text("not an image")
    with pytest.raises(PAReconError, match="notes.png"):
        run("sr", str(text), *common)
    with pytest.raises(PAReconError, match=r"run\.json.*scale.*×4.*×2"):
        run("sr", str(image), "--scale", "2", *common)
    with pytest.raises(PAReconError, match="nowhere"):
        run("sr", str(image), "--out", str(d / "bad"), "--checkpoint", str(d / "nowhere"))
    assert not (d / "bad").exists()


def test_sr_needs_the_checkpoint_named(files, capsys):
    d, image = files
    with pytest.raises(SystemExit) as exit_:
        run("sr", str(image), "--out", str(d / "bad"))
    assert exit_.value.code == 2 and "--checkpoint" in capsys.readouterr().err
    assert not (d / "bad").exists()


def write_sr_params(folder: Path, edit: Callable[[dict[str, Any]], object] = lambda profile: None) -> Path:
    """pipelines/sr/params.yaml with its data under ``folder / "data"`` (none there unless a test writes some), MLflow
    off and the smoke profile changed by ``edit``."""
    params = yaml.safe_load((Path(__file__).parents[2] / "pipelines" / "sr" / "params.yaml").read_text())
    params["benchmark"].update(data_root=str(folder / "data"), tracking=False)
    edit(params["profiles"]["smoke"])
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize("model, from_regression", [("regression", True), ("flow", False)])
def test_sr_train_warns_that_an_unused_regression_run_is_ignored(tmp_path, model, from_regression):
    path = write_sr_params(tmp_path, lambda p: p["model"].update(encoder_from_regression=from_regression))
    # The warning comes before any data are read; here there are none, which then stops the run.
    with pytest.warns(UserWarning, match=r"--regression runs/regression is ignored"), \
            pytest.raises(PAReconError, match=r"image folder not found \(the path comes from benchmark.data_root and "
                                              r"benchmark.test_sets in .*params.yaml\)"):
        run("sr-train", "--params", str(path), "--model", model, "--regression", "runs/regression",
            "--out", str(tmp_path / "run"))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["flow"].update(levls=2), "profiles.smoke.model.flow.levls: unknown flow settings"),
    (lambda m: m.update(residul=True), "profiles.smoke.model: expected flow, residual"),
    (lambda m: m.update(encoder_from_regression=True), "profiles.smoke.model.encoder_from_regression: "),
])
def test_sr_train_names_a_bad_model_section_by_its_key_before_reading_data(tmp_path, edit, message):
    path = write_sr_params(tmp_path, lambda p: edit(p["model"]))
    with pytest.raises(PAReconError) as err:
        run("sr-train", "--params", str(path), "--model", "flow", "--out", str(tmp_path / "run"))
    assert str(err.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize("edit, field", [
    (lambda e: e.update(temperatues=[0]), "profiles.smoke.eval.temperatues"),
    (lambda e: e.update(samples=1), "profiles.smoke.eval.samples"),
    (lambda e: e.update(temperatures=[0, -0.5]), "profiles.smoke.eval.temperatures[1]"),
    (lambda e: e["figure"].pop("left"), "profiles.smoke.eval.figure"),
])
def test_an_eval_settings_error_names_its_key_once(tmp_path, edit, field):
    path = write_sr_params(tmp_path, lambda p: edit(p["eval"]))
    for command in (["sr-train", "--model", "regression", "--out", str(tmp_path / "run")],
                    ["sr-eval", "--flow", "flow", "--regression", "regression", "--out", str(tmp_path / "results")]):
        with pytest.raises(PAReconError) as err:
            run(command[0], "--params", str(path), *command[1:])
        assert (err.value.file, err.value.field) == (str(path), field)


@pytest.fixture
def test_images(tmp_path) -> Path:
    """The Set5 and Set14 folders of pipelines/sr/params.yaml under ``tmp_path / "data"``, a few tiny PNGs each."""
    for folder, names in (("set5", ("bird", "baby")), ("set14", ("baboon", "zebra"))):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for name in names:
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "data" / folder / f"{name}.png")
    return tmp_path / "data"


@pytest.mark.parametrize("figure, field, message", [
    ({"image": "babon"}, "profiles.smoke.eval.figure.image", "no image 'babon' in test set 'Set14'"),
    ({"set": "Set15"}, "profiles.smoke.eval.figure.set", "no test set 'Set15'"),
])
def test_a_figure_image_that_is_not_there_is_refused_before_training_or_evaluating(tmp_path, test_images,
                                                                                  monkeypatch, figure, field,
                                                                                  message):
    monkeypatch.setattr(sr, "load_training_images", lambda *a: pytest.fail("training data read"))
    monkeypatch.setattr(sr, "load_sr_run", lambda *a: pytest.fail("a run loaded"))
    path = write_sr_params(tmp_path, lambda p: p["eval"]["figure"].update(figure))
    for command in (["sr-train", "--model", "regression", "--out", str(tmp_path / "run")],
                    ["sr-eval", "--flow", "flow", "--regression", "regression", "--out", str(tmp_path / "results")]):
        with pytest.raises(PAReconError, match=message) as err:
            run(command[0], "--params", str(path), *command[1:])
        assert (err.value.file, err.value.field) == (str(path), field)


def test_sr_eval_refuses_a_figure_crop_outside_its_image_before_loading_a_model(tmp_path, test_images, monkeypatch):
    monkeypatch.setattr(sr, "load_sr_run", lambda *a: pytest.fail("a run loaded"))
    path = write_sr_params(tmp_path, lambda p: p["eval"]["figure"].update(top=8, left=0, size=12))
    with pytest.raises(PAReconError, match=r"crop \(8, 0, 12\) does not fit the 16×16 image") as err:
        run("sr-eval", "--params", str(path), "--flow", "flow", "--regression", "regression",
            "--out", str(tmp_path / "results"))
    assert (err.value.file, err.value.field) == (str(path), "profiles.smoke.eval.figure")
    assert not (tmp_path / "results").exists()


def test_sr_train_reads_the_training_data_when_the_figure_image_is_there(tmp_path, test_images, monkeypatch):
    monkeypatch.setattr(sr, "load_training_images", lambda *a: pytest.fail("training data read"))
    with pytest.raises(pytest.fail.Exception, match="training data read"):
        run("sr-train", "--params", str(write_sr_params(tmp_path)), "--model", "regression",
            "--out", str(tmp_path / "run"))


@pytest.mark.parametrize("flag", ["--checkpoint", "--flow", "--regression"])
def test_a_checkpoint_file_given_for_a_training_folder_is_named(files, tmp_path, test_images, flag):
    d, image = files
    params, out = str(write_sr_params(tmp_path, lambda p: p["eval"].pop("figure"))), str(tmp_path / "out")
    folder, last = str(d / "flow"), str(d / "flow" / "last.pt")
    argv = {"--checkpoint": ["sr", str(image), "--checkpoint", last, "--out", out, "--device", "cpu"],
            "--flow": ["sr-eval", "--params", params, "--flow", last, "--regression", folder, "--out", out],
            "--regression": ["sr-eval", "--params", params, "--flow", folder, "--regression", last, "--out", out]}
    with pytest.raises(PAReconError, match=f"is a file; {flag} takes the training folder") as err:
        run(*argv[flag])
    assert (err.value.file, err.value.field) == (last, flag)


def test_sr_names_an_image_flow_run_as_not_an_sr_run(files, tmp_path):
    d, image = files
    splits = image_flows.ImageSplits(*(torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8),) * 3,
                                     *(torch.zeros(8, dtype=torch.int64),) * 3)
    config = TrainConfig(out_dir=str(tmp_path / "mnist_run"), max_steps=1, batch_size=4, device="cpu",
                         progress=False, tracking=False)
    image_flows.train_image_flow({"dequantization": {"kind": "uniform"},
                                  "layers": [{"checkerboard": 1, "subnet": {"hidden": 4, "blocks": 1}}]},
                                 config, splits, settings={"data": {"dataset": "mnist"}, "profile": "smoke"})
    with pytest.raises(PAReconError, match=r"not an SR run of sr-train \(its record gives no SR model kind; it was "
                                           r"trained on 'mnist'\)") as err:
        run("sr", str(image), "--checkpoint", str(tmp_path / "mnist_run"), "--out", str(tmp_path / "out"),
            "--device", "cpu")
    assert (err.value.file, err.value.field) == (str(tmp_path / "mnist_run" / "run.json"), "kind")
