"""Training pairs (seeded, consistent with the simulator) and short maximum-likelihood runs, resumed or restarted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from interruptions import interrupted_after
from PIL import Image
from prior_helpers import ARRAY8, GRID8, TINY_FLOW

from pa_recon.data import downsample, make_phantoms
from pa_recon.errors import PAReconError
from pa_recon.physics import MeasurementSimulator
from pa_recon.priors import (
    FlowPrior,
    cached_training_set,
    flow_config_for,
    load_prior,
    make_training_images,
    make_training_pairs,
    train_prior,
)
from pa_recon.priors import training
from pa_recon.priors.training import TRAINING_SET_FILE
from pa_recon.train import load_checkpoint
from pa_recon.train.tracking import import_mlflow

TRAIN = dict(batch_size=8, lr=3e-3, warmup_steps=0, val_every=0, sample_every=0, checkpoint_every=0, device="cpu",
             progress=False, tracking=False)


def test_pairs_are_seeded():
    x, y = make_training_pairs(4, GRID8, ARRAY8, seed=3)
    x2, y2 = make_training_pairs(4, GRID8, ARRAY8, seed=3)
    x3, y3 = make_training_pairs(4, GRID8, ARRAY8, seed=4)
    assert x.shape == (4, 1, 8, 8) and y.shape == (4, ARRAY8.n_elements, ARRAY8.n_samples)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, x3) and not torch.equal(y, y3)


def test_pairs_are_downsampled_phantoms_and_simulated_data_at_an_snr_in_range():
    x, y = make_training_pairs(6, GRID8, ARRAY8, seed=5, snr_db_range=(20.0, 30.0), vessel_params={"density": 1.5})
    fine = make_phantoms(6, 16, 16, 5, vessels={"density": 1.5})
    assert torch.equal(x, torch.from_numpy(downsample(fine, 2))[:, None])
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.max()) > 0
    clean = MeasurementSimulator(GRID8, ARRAY8, refine=2).operator(torch.from_numpy(fine)[:, None])
    rms = lambda t: t.pow(2).mean(dim=(1, 2)).sqrt()  # noqa: E731
    snr = 20 * torch.log10(rms(clean) / rms(y - clean))
    assert ((snr > 18.5) & (snr < 31.5)).all(), snr


def test_images_from_a_vessel_mask_folder_are_crops_of_its_vessels_and_their_block_averages(tmp_path: Path):
    """Masks of full-height vertical stripes: every fine crop (resized, flipped, turned) is constant along the
    stripes and holds both vessel (1) and background (0); the coarse image is its 2×2 block average."""
    for k in range(2):
        mask = np.zeros((40, 40), dtype=np.uint8)
        mask[:, 8 + 12 * k:14 + 12 * k] = 255
        mask[:, 30:34] = 255
        Image.fromarray(mask).save(tmp_path / f"{k:02d}_manual1.png")
    coarse, fine = make_training_images(6, GRID8, source="vessel_masks", mask_dir=tmp_path, split="all", seed=1)
    assert coarse.shape == (6, 1, 8, 8) and fine.shape == (6, 1, 16, 16)
    torch.testing.assert_close(coarse, torch.nn.functional.avg_pool2d(fine, 2), rtol=0, atol=1e-6)
    f = fine[:, 0]
    down_columns, along_rows = (f - f[:, :1]).abs().amax(dim=(1, 2)), (f - f[..., :1]).abs().amax(dim=(1, 2))
    assert (torch.minimum(down_columns, along_rows) < 1e-6).all()
    assert (f.amin(dim=(1, 2)) == 0).all() and (f.amax(dim=(1, 2)) > 0.95).all() and float(f.max()) <= 1


def test_bad_snr_range_is_rejected():
    with pytest.raises(PAReconError, match="snr_db_range"):
        make_training_pairs(2, GRID8, ARRAY8, snr_db_range=(30.0, 20.0))
    assert training.check_snr_range([20, 30.5]) == (20.0, 30.5)
    for bad in (("20", 30.0), [20.0], "ab", (20.0, float("nan")), (True, 30.0), 25.0):
        with pytest.raises(PAReconError) as info:
            training.check_snr_range(bad)
        assert info.value.field == "snr_db_range", bad


def test_a_training_set_must_leave_one_batch_after_the_validation_split(tmp_path: Path):
    assert training.validation_size(20, 8) == 2 and training.validation_size(8, 8, val_fraction=0.0) == 0
    with pytest.raises(PAReconError, match="8 items leave 7 for training after 1 for validation, fewer than one "
                                           "batch of 8") as info:
        train_prior("marginal", TINY_FLOW, {**TRAIN, "max_steps": 1}, torch.rand(8, 1, 8, 8), grid=GRID8,
                    out_dir=tmp_path / "run")
    assert info.value.field == "n" and not (tmp_path / "run").exists()


def _mean_nll(prior: FlowPrior, x: torch.Tensor, cond: torch.Tensor | None = None) -> float:
    with torch.no_grad():
        return float(prior.nll(x, cond).mean())


def test_a_few_training_steps_lower_the_held_out_nll(tmp_path: Path):
    x, _ = make_training_images(56, GRID8, seed=0)
    held_out = x[48:]
    torch.manual_seed(0)
    fresh = FlowPrior(flow_config_for("marginal", TINY_FLOW, GRID8), GRID8)
    before = _mean_nll(fresh, held_out)  # ActNorm initialises on these images: a fair, data-scaled start
    prior = train_prior("marginal", TINY_FLOW, {**TRAIN, "max_steps": 40}, x[:48], grid=GRID8,
                        val=(held_out, None), out_dir=tmp_path)
    assert _mean_nll(prior, held_out) < before - 0.1 * abs(before)
    assert (tmp_path / "prior.pt").is_file() and (tmp_path / "last.pt").is_file()
    assert prior.array is None and not prior.conditional


def test_a_conditional_run_saves_a_prior_with_its_array(tmp_path: Path):
    x, y = make_training_pairs(20, GRID8, ARRAY8, seed=2)
    prior = train_prior("conditional", TINY_FLOW, {**TRAIN, "max_steps": 4, "sample_every": 4}, x, y, grid=GRID8,
                        array=ARRAY8, val_fraction=0.2, out_dir=tmp_path)
    assert prior.conditional and prior.array == ARRAY8
    assert (tmp_path / "samples" / "step_0000004.png").is_file()
    assert load_prior(tmp_path / "prior.pt").settings() == prior.settings()


def test_a_tracked_run_is_named_after_its_kind_and_holds_the_prior(tmp_path: Path):
    x, _ = make_training_images(10, GRID8, seed=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracked = {**TRAIN, "max_steps": 2, "tracking": True, "tracking_uri": uri, "experiment": "priors",
               "log_model": False}
    for name, settings in (("marginal", tracked), ("mine", {**tracked, "run_name": "mine"})):
        train_prior("marginal", TINY_FLOW, settings, x, grid=GRID8, out_dir=tmp_path / name)
    client = import_mlflow().MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("priors").experiment_id],
                              order_by=["attributes.start_time ASC"])
    assert [run.info.run_name for run in runs] == ["marginal", "mine"]
    assert all(run.info.status == "FINISHED" and run.data.params["prior.kind"] == "marginal" for run in runs)
    assert [a.path for a in client.list_artifacts(runs[0].info.run_id, "prior")] == ["prior/prior.pt"]


def test_a_conditional_run_needs_data_and_an_array(tmp_path: Path):
    x, _ = make_training_images(4, GRID8)
    with pytest.raises(PAReconError, match="pairs"):
        train_prior("conditional", TINY_FLOW, {**TRAIN, "max_steps": 1}, x, grid=GRID8, out_dir=tmp_path)


def test_an_interrupted_run_resumes_and_ends_where_an_uninterrupted_one_does(tmp_path: Path, monkeypatch, capsys):
    x, y = make_training_pairs(20, GRID8, ARRAY8, seed=3)
    settings = dict(TRAIN, max_steps=6, checkpoint_every=2)
    args = dict(grid=GRID8, array=ARRAY8, val_fraction=0.2, extra_params={"data": {"seed": 3}})
    straight = train_prior("conditional", TINY_FLOW, settings, x, y, out_dir=tmp_path / "straight", **args)

    train_prior("conditional", TINY_FLOW, {**settings, "max_steps": 3}, x, y, out_dir=tmp_path / "resumed", **args)
    loss_fn = training._loss_fn
    monkeypatch.setattr(training, "_loss_fn", lambda dequant_sigma: interrupted_after(4, loss_fn(dequant_sigma)))
    with pytest.raises(KeyboardInterrupt):
        train_prior("conditional", TINY_FLOW, settings, x, y, out_dir=tmp_path / "resumed", **args)
    assert "trained with other settings; starting afresh" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 2
    assert not (tmp_path / "resumed" / "prior.pt").exists()  # the shorter run's prior is gone
    monkeypatch.setattr(training, "_loss_fn", loss_fn)
    capsys.readouterr()
    resumed = train_prior("conditional", TINY_FLOW, settings, x, y, out_dir=tmp_path / "resumed", **args)
    assert "afresh" not in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 6
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    record = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert record["train_seconds"] > 0 and record["settings"]["extra"] == {"data": {"seed": 3}}


@pytest.mark.parametrize(("change", "reason"), [
    ({}, "finished"),
    ({"extra_params": {"data": {"seed": 4}}}, "trained with other settings"),
    ({"alpha": 0.1}, "trained with other settings"),
])
def test_a_finished_or_otherwise_made_run_is_trained_afresh(tmp_path: Path, capsys, change, reason):
    x, _ = make_training_images(24, GRID8, seed=5)
    args = dict(grid=GRID8, out_dir=tmp_path, extra_params={"data": {"seed": 5}})
    first = train_prior("marginal", TINY_FLOW, {**TRAIN, "max_steps": 3}, x, **args)
    capsys.readouterr()
    again = train_prior("marginal", TINY_FLOW, {**TRAIN, "max_steps": 3}, x, **{**args, **change})
    assert f"{reason}; starting afresh" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3
    if not change:  # trained again from the same seed: the same prior
        for name, value in first.state_dict().items():
            assert torch.equal(value, again.state_dict()[name]), name


def test_a_kept_training_set_is_reused_for_the_same_description_and_removed_when_training_ends(tmp_path: Path):
    made = []

    def make():
        made.append(1)
        return make_training_pairs(10, GRID8, ARRAY8, seed=len(made))

    x, y = cached_training_set(tmp_path, {"seed": 1}, make)
    again = cached_training_set(tmp_path, {"seed": 1}, make)
    assert len(made) == 1 and torch.equal(again[0], x) and torch.equal(again[1], y)
    x, y = cached_training_set(tmp_path, {"seed": 2}, make)
    assert len(made) == 2 and not torch.equal(x, again[0])
    train_prior("conditional", TINY_FLOW, {**TRAIN, "max_steps": 1}, x, y, grid=GRID8, array=ARRAY8,
                val_fraction=0.2, out_dir=tmp_path)
    assert not (tmp_path / TRAINING_SET_FILE).exists() and (tmp_path / "prior.pt").is_file()
