"""Prior files (exact round trip, errors that name the file) and the geometry check."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from prior_helpers import ARRAY8, GRID4, condition, images, make_prior

from pa_recon.errors import PAReconError
from pa_recon.physics import Grid
from pa_recon.priors import check_geometry, load_prior, save_prior
from pa_recon.train import save_checkpoint


@pytest.mark.parametrize("kind", ["marginal", "conditional"])
def test_save_and_load_reproduce_the_nll_exactly(tmp_path: Path, kind: str):
    prior = make_prior(kind, dtype=torch.float32)
    path = tmp_path / "prior.pt"
    save_prior(path, prior)
    loaded = load_prior(path)
    x = images(3, low=-0.1, high=1.1, dtype=torch.float32)
    cond = condition(3, dtype=torch.float32) if prior.conditional else None
    with torch.no_grad():
        assert torch.equal(loaded.nll(x, cond), prior.nll(x, cond))
    assert loaded.settings() == prior.settings()
    assert (loaded.grid, loaded.array, loaded.conditional) == (prior.grid, prior.array, prior.conditional)
    assert loaded.source == str(path) and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())


def test_missing_file_is_named(tmp_path: Path):
    path = tmp_path / "nowhere" / "prior.pt"
    with pytest.raises(PAReconError, match="not found") as err:
        load_prior(path)
    assert err.value.file == str(path)


@pytest.mark.parametrize(("map_location", "message"), [
    ("gpu", "not a torch device: 'gpu'"), ("cuda", "CUDA was asked for but is not available")])
def test_a_device_that_is_not_there_is_named_not_the_file(tmp_path: Path, monkeypatch, map_location, message):
    path = tmp_path / "prior.pt"
    save_prior(path, make_prior("marginal"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PAReconError, match=message) as err:
        load_prior(path, map_location=map_location)
    assert err.value.field == "map_location" and err.value.file is None


def test_corrupt_file_is_named(tmp_path: Path):
    path = tmp_path / "prior.pt"
    save_prior(path, make_prior("marginal", dtype=torch.float32))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(PAReconError) as err:
        load_prior(path)
    assert err.value.file == str(path)


@pytest.mark.parametrize(("state", "message"), [
    ({"model": {}, "optimizer": {}}, "training checkpoint"),
    ({"weights": torch.zeros(2)}, "not a prior file"),
])
def test_a_file_that_is_not_a_prior_is_named(tmp_path: Path, state: dict, message: str):
    path = tmp_path / "other.pt"
    save_checkpoint(path, state)
    with pytest.raises(PAReconError, match=message) as err:
        load_prior(path)
    assert err.value.file == str(path)


def test_weights_that_do_not_fit_the_settings_are_reported(tmp_path: Path):
    path = tmp_path / "prior.pt"
    prior = make_prior("marginal", dtype=torch.float32)
    save_prior(path, prior)
    state = torch.load(path, weights_only=True)
    state["settings"]["flow"]["steps"] = 2
    save_checkpoint(path, state)
    with pytest.raises(PAReconError, match="inconsistent") as err:
        load_prior(path)
    assert err.value.file == str(path)


def test_geometry_check_passes_for_the_training_geometry():
    check_geometry(make_prior("conditional"), GRID4, ARRAY8)
    check_geometry(make_prior("marginal"), GRID4, None)


def test_other_pixel_size_raises_naming_the_difference_and_the_remedies():
    prior = make_prior("marginal")
    other = dataclasses.replace(GRID4, dx=2 * GRID4.dx)
    with pytest.raises(PAReconError, match=r"grid\.dx.*retrain.*--allow-geometry-mismatch"):
        check_geometry(prior, other, ARRAY8)
    with pytest.warns(UserWarning, match="grid.dx"):
        check_geometry(prior, other, ARRAY8, allow_mismatch=True)


def test_other_array_matters_only_to_a_conditional_prior():
    other = dataclasses.replace(ARRAY8, n_samples=ARRAY8.n_samples + 8)
    check_geometry(make_prior("marginal"), GRID4, other)
    with pytest.raises(PAReconError, match="array.n_samples"):
        check_geometry(make_prior("conditional"), GRID4, other)
    with pytest.warns(UserWarning, match="array.n_samples"):
        check_geometry(make_prior("conditional"), GRID4, other, allow_mismatch=True)


def test_other_image_size_cannot_be_allowed(tmp_path: Path):
    path = tmp_path / "prior.pt"
    save_prior(path, make_prior("marginal", dtype=torch.float32))
    with pytest.raises(PAReconError, match="grid size 8×8") as err:
        check_geometry(load_prior(path), Grid(nx=8, nz=8, dx=GRID4.dx), None, allow_mismatch=True)
    assert err.value.file == str(path)
