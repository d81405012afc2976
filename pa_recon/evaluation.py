"""Per-scan metrics of reconstruction files against the ground truth of their measurement file, read a chunk of
scans at a time, so memory holds one chunk of each file whatever their length."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from pa_recon.checks import check_count
from pa_recon.data.hdf5io import FilePath, data_digest, n_scans, read_measurements, read_reconstructions
from pa_recon.errors import PAReconError
from pa_recon.report import per_scan_metrics


@dataclass(frozen=True)
class Evaluation:
    """``per_scan``: ``{method: {metric: (N,)}}`` as :func:`~pa_recon.report.per_scan_metrics` gives them, for
    every scan of the file; ``groups`` ``(N,)``: each scan's group (``snr<S>dB`` from the file's SNRs, else
    ``all``); ``sources``: the reconstruction file of each method, in the order of the files and their methods."""

    per_scan: dict[str, dict[str, np.ndarray]]
    groups: np.ndarray
    sources: dict[str, str]


def evaluate_files(measurements: FilePath, reconstructions: Sequence[FilePath], *, chunk: int = 256,
                   progress: bool = False) -> Evaluation:
    """Score every method of ``reconstructions`` against the truth ``/ground_truth/p0`` of ``measurements``.

    Every file's layout, grid, source data and method names are checked before any metric is computed: a
    reconstruction must be of the measurement file's grid and data (its recorded data digest; a file without one
    is taken with a warning), of its scans and image shape, and no method name may come twice. ``chunk`` scans are
    read from each file at a time (the metrics are per scan, so the result does not depend on it).
    """
    chunk = check_count(chunk, "chunk", minimum=1)
    first = read_measurements(measurements, stop=1)
    if first.p0 is None:
        raise PAReconError("no ground truth to evaluate against", file=measurements, field="/ground_truth/p0")
    n = n_scans(measurements)
    truth_shape = (n, *first.p0.shape[1:])
    digest = data_digest(measurements)
    sources: dict[str, str] = {}
    for path in reconstructions:
        recon, recon_scans = read_reconstructions(path, stop=1), n_scans(path)
        if recon.grid != first.grid:
            raise PAReconError(f"grid {recon.grid} differs from the measurement file's {first.grid}: a "
                               "reconstruction of other data", file=path, field="/grid")
        if recon.source_digest is None:
            warnings.warn(f"{path} does not record which data it reconstructs (written by an older pa-recon); "
                          f"it is taken to be of {measurements}", stacklevel=2)
        elif recon.source_digest != digest:
            raise PAReconError(f"reconstructs other data than {measurements} (of {recon.source_measurements!r}, "
                               "whose data digest differs): evaluate each reconstruction against its own "
                               "measurement file", file=path, field="/@source_data_sha256")
        for method, stack in recon.images.items():
            if method in sources:
                raise PAReconError(f"a second reconstruction named {method!r}, after the one in {sources[method]}; "
                                   "give each its own name (reconstruct --name)", file=path,
                                   field=f"/reconstructions/{method}")
            shape = (recon_scans, *stack.shape[1:])
            if shape != truth_shape:
                raise PAReconError(f"shape {shape} does not match the truth {truth_shape}", file=path,
                                   field=f"/reconstructions/{method}")
            sources[method] = str(path)
    chunks, snr_db = [], []
    for start in tqdm(range(0, n, chunk), desc="evaluate", unit="chunk", disable=not progress):
        meas = read_measurements(measurements, start=start, stop=min(n, start + chunk))
        parts = [read_reconstructions(path, start=start, stop=min(n, start + chunk)) for path in reconstructions]
        chunks.append(per_scan_metrics(meas.p0, {m: s for p in parts for m, s in p.images.items()},
                                       {k: v for p in parts for k, v in p.maps.items()},
                                       {k: v for p in parts for k, v in p.per_scan.items()},
                                       {k: v for p in parts for k, v in p.labels.items()}))
        snr_db.append(meas.snr_db)
    per_scan = {m: {metric: np.concatenate([c[m][metric] for c in chunks]) for metric in values}
                for m, values in chunks[0].items()}
    groups = (np.array([f"snr{v:g}dB" for v in np.concatenate(snr_db)]) if first.snr_db is not None
              else np.full(n, "all"))
    return Evaluation(per_scan, groups, sources)
