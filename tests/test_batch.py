"""Chunked reconstruction of a file: local and dask paths agree exactly; bad settings are named."""

import numpy as np
import pytest
import torch

from pa_recon.batch import ReconJob, chunks, reconstruct_file
from pa_recon.data.hdf5io import write_measurements
from pa_recon.errors import PAReconError
from pa_recon.physics import Grid, LinearArray, PATOperator

GRID = Grid(nx=12, nz=10, dx=2e-4)
ARRAY = LinearArray.uniform(12, 2e-4, fs=20e6, n_samples=48)


@pytest.fixture(scope="module")
def measurements(tmp_path_factory):
    x = torch.rand(5, 1, 10, 12, generator=torch.Generator().manual_seed(0))
    y = PATOperator(GRID, ARRAY)(x)
    path = tmp_path_factory.mktemp("batch") / "meas.h5"
    write_measurements(path, y.numpy(), ARRAY.to_dict(), GRID.to_dict(), np.full(5, 1e-3), p0=x[:, 0].numpy())
    return str(path)


def test_chunks_cover_every_scan_once():
    assert list(chunks(7, 3)) == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(PAReconError, match="batch-size"):
        list(chunks(7, 0))


def test_chunking_does_not_change_the_result(measurements):
    job = ReconJob(measurements, "cgls", {"n_iter": 5})
    whole = reconstruct_file(job, batch_size=5)["image"]
    torch.testing.assert_close(reconstruct_file(job, batch_size=2)["image"], whole, rtol=1e-5, atol=1e-6)


def test_dask_local_cluster_equals_the_local_path(measurements):
    job = ReconJob(measurements, "tv", {"n_iter": 10})
    local = reconstruct_file(job, batch_size=2)
    distributed = reconstruct_file(job, batch_size=2, scheduler="distributed", n_workers=2)
    assert local.keys() == distributed.keys() == {"image"}
    np.testing.assert_array_equal(distributed["image"], local["image"])


def test_bad_scheduler_and_unknown_setting_are_named(measurements):
    with pytest.raises(PAReconError, match="--scheduler"):
        reconstruct_file(ReconJob(measurements, "bp"), 2, scheduler="ray")
    with pytest.raises(PAReconError, match="reconstruct.bp"):
        reconstruct_file(ReconJob(measurements, "bp", {"lam": 1.0}), 2)
