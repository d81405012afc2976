"""``pa-recon sr``: super-resolve a user's image with a saved SR flow; user errors name the file."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pa_recon.cli import sr
from pa_recon.errors import PAReconError
from pa_recon.train import TrainConfig
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


@pytest.mark.parametrize("model, from_regression", [("regression", True), ("flow", False)])
def test_sr_train_warns_that_an_unused_regression_run_is_ignored(tmp_path, model, from_regression):
    params = yaml.safe_load((Path(__file__).parents[2] / "pipelines" / "sr" / "params.yaml").read_text())
    params["benchmark"].update(data_root=str(tmp_path / "no_data"), tracking=False)
    params["profiles"]["smoke"]["model"]["encoder_from_regression"] = from_regression
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    # The warning comes before any data are read; here there are none, which then stops the run.
    with pytest.warns(UserWarning, match=r"--regression runs/regression is ignored"), \
            pytest.raises(PAReconError, match="no_data"):
        run("sr-train", "--params", str(path), "--model", model, "--regression", "runs/regression",
            "--out", str(tmp_path / "run"))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["flow"].update(levls=2), "profiles.smoke.model.flow.levls: unknown flow settings"),
    (lambda m: m.update(residul=True), "profiles.smoke.model: expected flow, residual"),
    (lambda m: m.update(encoder_from_regression=True), "profiles.smoke.model.encoder_from_regression: "),
])
def test_sr_train_names_a_bad_model_section_by_its_key_before_reading_data(tmp_path, edit, message):
    params = yaml.safe_load((Path(__file__).parents[2] / "pipelines" / "sr" / "params.yaml").read_text())
    params["benchmark"].update(data_root=str(tmp_path / "no_data"), tracking=False)
    edit(params["profiles"]["smoke"]["model"])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(PAReconError) as err:
        run("sr-train", "--params", str(path), "--model", "flow", "--out", str(tmp_path / "run"))
    assert str(err.value).startswith(f"{path}: {message}")
