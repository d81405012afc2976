"""Chunked reconstruction of a file: local and dask paths agree exactly (images, maps and per-scan values);
bad settings are named."""

import os
import shutil
import warnings
from dataclasses import replace

import dask
import h5py
import numpy as np
import pytest
import torch

from pa_recon import batch
from pa_recon.batch import ReconJob, chunks, file_sha256, local_cluster, reconstruct_chunks, reconstruct_file
from pa_recon.data.hdf5io import data_digest, write_measurements, write_reconstructions
from pa_recon.errors import PAReconError
from pa_recon.flows.registry import randomize_parameters
from pa_recon.physics import Grid, LinearArray, PATOperator
from pa_recon.priors import FlowPrior, flow_config_for, save_prior
from pa_recon.recon import START_KINDS, STOP_REASONS, method_settings

GRID = Grid(nx=12, nz=10, dx=2e-4)
ARRAY = LinearArray.uniform(12, 2e-4, fs=20e6, n_samples=48)
#: An 8 × 8 geometry for the methods with a prior (the flow's two levels need sides divisible by 4).
GRID8 = Grid(nx=8, nz=8, dx=2e-4)
ARRAY8 = LinearArray.uniform(8, 2e-4, fs=20e6, n_samples=32)
FLOW = {"architecture": "glow", "levels": 2, "steps": 1, "subnet": {"kind": "resnet", "hidden": 8, "blocks": 1},
        "cond_features": 3, "encoder_width": 4}


def write_scans(path, grid: Grid, array: LinearArray, n: int) -> str:
    x = torch.rand(n, 1, grid.nz, grid.nx, generator=torch.Generator().manual_seed(0))
    y = PATOperator(grid, array)(x)
    write_measurements(path, y.numpy(), array.to_dict(), grid.to_dict(), np.full(n, 1e-3), p0=x[:, 0].numpy())
    return str(path)


@pytest.fixture(scope="module")
def measurements(tmp_path_factory):
    return write_scans(tmp_path_factory.mktemp("batch") / "meas.h5", GRID, ARRAY, 5)


@pytest.fixture(scope="module")
def with_prior(tmp_path_factory):
    """A measurement file of 5 scans on the 8 × 8 geometry and a random conditional prior file for it."""
    d = tmp_path_factory.mktemp("batch_prior")
    torch.manual_seed(0)
    prior = randomize_parameters(FlowPrior(flow_config_for("conditional", FLOW, GRID8), GRID8, ARRAY8), scale=0.1)
    save_prior(d / "prior.pt", prior.eval())
    return write_scans(d / "meas.h5", GRID8, ARRAY8, 5), str(d / "prior.pt")


def assert_equal_outputs(a, b):
    assert a.maps.keys() == b.maps.keys() and a.per_scan.keys() == b.per_scan.keys() and a.labels == b.labels
    for name in a.maps:
        np.testing.assert_array_equal(a.maps[name], b.maps[name])
    for name in a.per_scan:
        np.testing.assert_array_equal(a.per_scan[name], b.per_scan[name])
        assert a.per_scan[name].dtype == b.per_scan[name].dtype


def test_chunks_cover_every_scan_once():
    assert list(chunks(7, 3)) == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(PAReconError, match="batch-size"):
        list(chunks(7, 0))


def test_chunking_does_not_change_the_result(measurements):
    job = ReconJob(measurements, "cgls", {"n_iter": 5})
    whole = reconstruct_file(job, batch_size=5)
    parts = reconstruct_file(job, batch_size=2)
    torch.testing.assert_close(parts.maps["image"], whole.maps["image"], rtol=1e-5, atol=1e-6)
    assert parts.per_scan["chi2"].shape == (5,)
    torch.testing.assert_close(parts.per_scan["chi2"], whole.per_scan["chi2"], rtol=1e-4, atol=0)


def test_dask_local_cluster_equals_the_local_path(measurements):
    job = ReconJob(measurements, "tv", {"n_iter": 10})
    local = reconstruct_file(job, batch_size=2)
    distributed = reconstruct_file(job, batch_size=2, scheduler="distributed", n_workers=2)
    assert local.maps.keys() == {"image"} and local.per_scan.keys() == {"chi2"}
    assert_equal_outputs(distributed, local)


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(2) as c:
        yield c


def test_local_cluster_workers_keep_the_default_malloc_trim_threshold(cluster):
    from dask.distributed import Client

    assert dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_") is not None
    with Client(cluster.scheduler_address) as client:
        trims = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert len(trims) == 2 and set(trims.values()) == {os.environ.get("MALLOC_TRIM_THRESHOLD_")}


@pytest.mark.parametrize("method, settings, values", [
    ("map", {"steps": 3}, {"chi2", "stop_reason", "steps", "objective", "start", "start_nll"}),
    ("posterior", {"n_samples": 4, "chunk": 3}, {"chi2", "acceptance", "samples", "chi2_median", "scan_flag"}),
])
def test_prior_methods_on_a_dask_scheduler_equal_the_local_path(with_prior, cluster, method, settings, values):
    meas, prior = with_prior
    job = ReconJob(meas, method, settings, seed=3, prior=prior)
    local = reconstruct_file(job, batch_size=2)
    assert local.per_scan.keys() == values and all(v.shape == (5,) for v in local.per_scan.values())
    assert local.labels == ({"stop_reason": STOP_REASONS, "start": START_KINDS} if method == "map" else {})
    assert_equal_outputs(reconstruct_file(job, batch_size=2, scheduler="distributed",
                                          address=cluster.scheduler_address), local)


def test_chunks_come_with_their_first_scan_in_any_order_on_dask(measurements, cluster):
    job = ReconJob(measurements, "tv", {"n_iter": 10})
    local = dict(reconstruct_chunks(job, 2))
    assert sorted(local) == [0, 2, 4] and [len(part.per_scan["chi2"]) for _, part in sorted(local.items())] == [2, 2, 1]
    distributed = list(reconstruct_chunks(job, 2, scheduler="distributed", address=cluster.scheduler_address))
    assert sorted(start for start, _ in distributed) == [0, 2, 4]
    for start, part in distributed:
        assert_equal_outputs(part, local[start])


def test_the_chunk_iterator_checks_first_and_stops_its_cluster_when_closed(measurements, monkeypatch):
    from distributed.core import Status

    started = []
    original = batch.local_cluster
    monkeypatch.setattr(batch, "local_cluster", lambda n: started.append(original(n)) or started[-1])
    bad = ReconJob(measurements, "bp", {"lam": 1.0})
    with pytest.raises(PAReconError, match="reconstruct.bp"):
        reconstruct_chunks(bad, 2, scheduler="distributed", n_workers=1)
    parts = reconstruct_chunks(ReconJob(measurements, "bp"), 2, scheduler="distributed", n_workers=1)
    assert started == []
    start, part = next(parts)
    assert start in (0, 2, 4) and len(started) == 1 and started[0].status == Status.running
    parts.close()
    assert started[0].status == Status.closed


def test_workers_read_their_chunks_of_a_latent_start_file(with_prior, cluster, tmp_path):
    meas, prior = with_prior
    latent_settings = method_settings("map_latent", {"steps": 3})
    latent = reconstruct_file(ReconJob(meas, "map_latent", latent_settings, prior=prior), 2)
    path = tmp_path / "latent.h5"
    write_reconstructions(path, {"map_latent": latent.maps["image"]}, GRID8.to_dict(), "meas.h5",
                          attrs={"method": "map_latent", "prior_sha256": file_sha256(prior),
                                 **{f"settings_{k}": str(v) for k, v in latent_settings.items()}},
                          source_digest=data_digest(meas))
    # Settings as a library caller may give them, the others left at their defaults.
    job = ReconJob(meas, "map", {"steps": 3, "latent_steps": 3}, prior=prior, latent_start=str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file found unfit would warn and not be read
        local = reconstruct_file(job, batch_size=2)
    assert_equal_outputs(local, reconstruct_file(replace(job, latent_start=None), batch_size=2))
    assert_equal_outputs(reconstruct_file(job, batch_size=2, scheduler="distributed",
                                          address=cluster.scheduler_address), local)


def test_posterior_draws_do_not_depend_on_the_batch_size_or_the_chunk_setting(with_prior):
    meas, prior = with_prior
    job = ReconJob(meas, "posterior", {"n_samples": 4, "chunk": 3, "refine_steps": 2}, seed=3, prior=prior)
    whole = reconstruct_file(job, batch_size=5)
    for parts in (reconstruct_file(job, batch_size=2),
                  reconstruct_file(replace(job, settings={**job.settings, "chunk": 1}), batch_size=5)):
        for name in whole.maps:
            torch.testing.assert_close(parts.maps[name], whole.maps[name], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(parts.per_scan["chi2"], whole.per_scan["chi2"], rtol=1e-4, atol=0)
    other_seed = reconstruct_file(replace(job, seed=4), batch_size=5)
    assert not np.allclose(other_seed.maps["image"], whole.maps["image"])


def test_bad_scheduler_and_unknown_setting_are_named(measurements):
    with pytest.raises(PAReconError, match="--scheduler"):
        reconstruct_file(ReconJob(measurements, "bp"), 2, scheduler="ray")
    with pytest.raises(PAReconError, match="reconstruct.bp"):
        reconstruct_file(ReconJob(measurements, "bp", {"lam": 1.0}), 2)


def test_workers_below_one_are_refused_before_a_cluster_starts(measurements):
    with pytest.raises(PAReconError, match="--workers: need at least 1 worker"):
        reconstruct_file(ReconJob(measurements, "bp"), 2, scheduler="distributed", n_workers=0)


def _copy_with(path, tmp_path, **changes) -> str:
    """A copy of the measurement file ``path`` with datasets of ``/measurements`` changed in place."""
    copy = tmp_path / "changed.h5"
    shutil.copy(path, copy)
    with h5py.File(copy, "r+") as f:
        for name, change in changes.items():
            values = f[f"measurements/{name}"][...]
            change(values)
            f[f"measurements/{name}"][...] = values
    return str(copy)


def _spy_chunks(monkeypatch) -> list:
    calls = []
    original = batch.reconstruct_chunk
    monkeypatch.setattr(batch, "reconstruct_chunk", lambda *args: calls.append(args) or original(*args))
    return calls


def test_bad_values_in_a_late_scan_stop_the_run_before_any_chunk(measurements, tmp_path, monkeypatch):
    calls = _spy_chunks(monkeypatch)
    bad = _copy_with(measurements, tmp_path, data=lambda d: d.__setitem__((4, 0, 0), np.nan))
    with pytest.raises(PAReconError, match=r"/measurements/data: .*NaN.*scan 4"):
        reconstruct_file(ReconJob(bad, "tv"), 2)
    assert calls == []


def test_a_zero_noise_level_is_refused_where_the_method_weighs_by_it_alone(with_prior, tmp_path, monkeypatch):
    path, prior = with_prior
    calls = _spy_chunks(monkeypatch)
    quiet = _copy_with(path, tmp_path, noise_sigma=lambda s: s.__setitem__(3, 0.0))
    settings = {"steps": 2, "latent_steps": 1}
    with pytest.raises(PAReconError, match=r"noise_sigma: scan 3 has noise level 0; .*model_error"):
        reconstruct_file(ReconJob(quiet, "map", method_settings("map", settings), prior=prior), 2)
    assert calls == []
    # With a model error the likelihood's std stays positive, and without a prior the noise level is not used.
    assert reconstruct_file(ReconJob(quiet, "map", method_settings("map", {**settings, "model_error": 0.05}),
                                     prior=prior), 2).maps["image"].shape == (5, 8, 8)
    assert reconstruct_file(ReconJob(quiet, "bp"), 2).maps["image"].shape == (5, 8, 8)


def test_a_prior_given_to_a_method_without_one_is_ignored_with_a_warning(measurements, with_prior):
    _, prior = with_prior  # made for another geometry: it is not even loaded
    with pytest.warns(UserWarning, match="uses no prior; --prior .* is ignored"):
        out = reconstruct_file(ReconJob(measurements, "bp", prior=prior), 2)
    assert_equal_outputs(out, reconstruct_file(ReconJob(measurements, "bp"), 2))
