"""Reconstruction of a whole measurement file in chunks of scans, in this process or over a dask cluster.

Both paths run the same :func:`reconstruct_chunk` on the same chunks, so their results (image-shaped maps and
per-scan values alike) are identical. Random methods draw each scan's values from a generator seeded by the job's
seed and the scan's index, so a scan's draws do not depend on the chunking either. Workers read their scans and
the prior from files themselves (only paths and settings travel) and cache operator and prior per process, so the
files must be readable at the same paths on every worker.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from pa_recon.data.hdf5io import data_digest, n_scans, read_measurements, read_reconstructions
from pa_recon.errors import PAReconError
from pa_recon.physics import Grid, LinearArray, PATOperator
from pa_recon.priors import FlowPrior, check_geometry, load_prior
from pa_recon.recon import (
    MethodOutput,
    MethodSpec,
    Problem,
    check_prior_kind,
    latent_start_mismatch,
    method_settings,
    needs_prior,
    operator_norm,
    parse_method,
    reconstruct,
    resolved_start,
)

if TYPE_CHECKING:
    from dask.distributed import LocalCluster


@dataclass(frozen=True)
class ReconJob:
    """What to do with one measurement file: method, its settings, device, random seed, ‖A‖ and threads.

    :func:`reconstruct_file` fills in ``op_norm`` (computed once, so every worker uses the same value) and
    ``threads``, the torch thread count every chunk runs with: it decides how matrix products split their sums,
    so matching it makes workers' results bitwise equal to this process's. ``prior_kind`` ("marginal" or
    "conditional") is the kind the ``prior`` file must be; ``None`` takes any kind the method works with.
    ``compile``: every process compiles the prior's passes (:meth:`~pa_recon.priors.FlowPrior.compile_passes`).
    ``latent_start``: a reconstruction file whose images ``map`` takes as its latent start instead of computing it
    (see :func:`usable_latent_start`).
    """

    measurements: str
    method: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    seed: int = 0
    op_norm: float = 0.0
    threads: int = 0
    prior: str | None = None
    prior_kind: str | None = None
    allow_geometry_mismatch: bool = False
    compile: bool = False
    latent_start: str | None = None


@dataclass(frozen=True)
class ReconOutput:
    """Results for ``n`` scans as numpy arrays: ``maps`` ``{name: (n, nz, nx)}`` float32 (always ``"image"``),
    ``per_scan`` ``{name: (n,)}`` (always ``"chi2"``) and the code names of the coded per-scan values; see
    :class:`~pa_recon.recon.MethodOutput`."""

    maps: dict[str, np.ndarray]
    per_scan: dict[str, np.ndarray]
    labels: dict[str, tuple[str, ...]]

    @classmethod
    def from_method(cls, out: MethodOutput) -> ReconOutput:
        """A method's output on the CPU, maps without their channel axis and in float32."""
        return cls({name: value[:, 0].detach().cpu().numpy().astype(np.float32) for name, value in out.maps.items()},
                   {name: value.detach().cpu().numpy() for name, value in out.per_scan.items()}, dict(out.labels))

    @classmethod
    def concatenate(cls, parts: Sequence[ReconOutput]) -> ReconOutput:
        """Consecutive chunks' outputs as one, along the scan axis."""
        return cls({name: np.concatenate([p.maps[name] for p in parts]) for name in parts[0].maps},
                   {name: np.concatenate([p.per_scan[name] for p in parts]) for name in parts[0].per_scan},
                   parts[0].labels)


@functools.lru_cache(maxsize=4)
def _operator(grid: Grid, array: LinearArray, device: str) -> PATOperator:
    return PATOperator(grid, array, device=device)


def file_operator(path: str, device: str) -> PATOperator:
    """The operator of a measurement file's geometry, built once per process."""
    head = read_measurements(path, stop=1)
    return _operator(Grid.from_dict(head.grid), LinearArray.from_dict(head.array), device)


@functools.lru_cache(maxsize=4)
def _prior(path: str, device: str, compiled: bool) -> FlowPrior:
    prior = load_prior(path, map_location=device)
    return prior.compile_passes() if compiled else prior


def job_prior(job: ReconJob, op: PATOperator) -> FlowPrior | None:
    """The job's prior (loaded once per process), checked against the method (its kind, ``job.prior_kind`` where
    given) and the operator's geometry; None without one, or (with a warning) for a method that uses none."""
    uses_prior = needs_prior(job.method)
    if job.prior is None:
        if uses_prior:
            raise PAReconError(f"method {job.method!r} needs a prior", field="--prior")
        return None
    if not uses_prior:
        warnings.warn(f"method {job.method!r} uses no prior; --prior {job.prior} is ignored", stacklevel=2)
        return None
    prior = _prior(job.prior, job.device, job.compile)
    try:
        check_prior_kind(MethodSpec(job.method, job.prior_kind), prior.conditional)
    except PAReconError as error:
        raise PAReconError(error.message, file=job.prior, field="--prior") from None
    check_geometry(prior, op.grid, op.array, allow_mismatch=job.allow_geometry_mismatch)
    return prior


def file_sha256(path: str, *, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes (hex), read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def usable_latent_start(job: ReconJob, prior: FlowPrior | None) -> str | None:
    """``job.latent_start`` when its images are the latent start of the job's run, else ``None``.

    The file must hold one reconstruction (else an error, whatever the run). ``None`` when the run starts from no
    latent MAP: a method other than ``map``, or an ``init`` that resolves to another start for ``prior``. If the
    file is not a ``map_latent`` run on the same data (by digest), with the same prior (by the digest that
    ``pa-recon reconstruct`` records) and the step rule and ``model_error`` of the job's latent start
    (:func:`~pa_recon.recon.latent_start_mismatch`), a warning says why and the run computes its start itself.
    """
    path = job.latent_start
    if path is None:
        return None
    recon = read_reconstructions(path, stop=1)
    if len(recon.images) != 1:
        raise PAReconError(f"holds {len(recon.images)} reconstructions; a latent start needs a file of one",
                           file=path, field="--latent-start")
    if job.method != "map" or prior is None:
        return None
    settings = method_settings(job.method, job.settings)
    if resolved_start(settings["init"], prior) != "latent":
        return None
    reason = _latent_start_mismatch(job, settings, recon.attrs, recon.source_digest)
    if reason is not None:
        warnings.warn(f"{path}: {reason}; the latent start is computed instead", stacklevel=2)
        return None
    return path


def _latent_start_mismatch(job: ReconJob, settings: Mapping[str, Any], attrs: Mapping[str, Any],
                           source_digest: str | None) -> str | None:
    """Why a reconstruction file with root ``attrs`` and ``source_digest`` is not the latent start of the job's
    ``map`` run with (complete) ``settings``, or ``None``."""
    if source_digest != data_digest(job.measurements):
        return f"it was not made from the data of {job.measurements}"
    method = str(attrs.get("method", ""))
    try:
        is_latent_map = parse_method(method).method == "map_latent"
    except PAReconError:
        is_latent_map = False
    if not is_latent_map:
        return f"it holds a {method or 'unnamed'} reconstruction, not a map_latent one"
    if job.prior is None or attrs.get("prior_sha256") != file_sha256(job.prior):
        return f"it was not made with the prior {job.prior}"
    stored = {key.removeprefix("settings_"): _literal(value) for key, value in attrs.items()
              if key.startswith("settings_")}
    try:
        return latent_start_mismatch(settings, method_settings("map_latent", stored))
    except PAReconError as err:
        return f"its settings are not map_latent settings of this version: {err.message}"


def _literal(text: Any) -> Any:
    """A setting as ``pa-recon reconstruct`` stores it (``str`` of the value) back as the value."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def reconstruct_chunk(job: ReconJob, start: int, stop: int) -> ReconOutput:
    """Scans ``start .. stop − 1`` of the job's file: maps ``(n, nz, nx)`` and per-scan values ``(n,)``."""
    if job.threads and torch.get_num_threads() != job.threads:
        torch.set_num_threads(job.threads)
    op = file_operator(job.measurements, job.device)
    meas = read_measurements(job.measurements, start=start, stop=stop)
    generators = [torch.Generator(device=job.device).manual_seed(job.seed * 1_000_003 + scan)
                  for scan in range(start, stop)]
    latent_start = None
    if job.latent_start is not None:
        (images,) = read_reconstructions(job.latent_start, start=start, stop=stop).images.values()
        latent_start = torch.as_tensor(images, device=job.device)[:, None]
    problem = Problem(op=op, y=torch.as_tensor(meas.data, device=job.device).float(),
                      sigma=torch.as_tensor(meas.noise_sigma, device=job.device).float(), op_norm=job.op_norm,
                      prior=job_prior(job, op), generator=generators, latent_start=latent_start)
    return ReconOutput.from_method(reconstruct(job.method, problem, job.settings))


def check_scans(job: ReconJob, ranges: Sequence[tuple[int, int]]) -> None:
    """Read every chunk of the job's file once before any work, so that bad values (NaN or infinite data or noise
    levels; a noise level of 0 where the method weighs the data by it alone) stop the run before it starts."""
    weighs_by_noise = needs_prior(job.method) and job.settings.get("model_error", 0.0) == 0
    for start, stop in ranges:
        sigma = read_measurements(job.measurements, start=start, stop=stop).noise_sigma
        if weighs_by_noise and not (sigma > 0).all():
            scan = start + int(np.flatnonzero(~(sigma > 0))[0])
            raise PAReconError(f"scan {scan} has noise level {sigma[scan - start]:g}; {job.method} with model_error 0 "
                               f"weighs the data by it, so it must be positive (or set reconstruct.{job.method}."
                               "model_error > 0)", file=job.measurements, field="/measurements/noise_sigma")


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges of at most ``size`` scans covering ``0 .. total − 1``."""
    if size < 1:
        raise PAReconError(f"batch size must be >= 1, got {size}", field="--batch-size")
    return ((start, min(total, start + size)) for start in range(0, total, size))


def reconstruct_file(job: ReconJob, batch_size: int, *, scheduler: str = "local",
                     address: str | None = None, n_workers: int | None = None) -> ReconOutput:
    """All scans of ``job.measurements``: maps ``(N, nz, nx)`` and per-scan values ``(N,)``, chunked by
    ``batch_size``; the chunks of :func:`reconstruct_chunks` in scan order."""
    with closing(reconstruct_chunks(job, batch_size, scheduler=scheduler, address=address,
                                    n_workers=n_workers)) as parts:
        return ReconOutput.concatenate([part for _, part in sorted(parts, key=lambda item: item[0])])


def reconstruct_chunks(job: ReconJob, batch_size: int, *, scheduler: str = "local", address: str | None = None,
                       n_workers: int | None = None) -> Iterator[tuple[int, ReconOutput]]:
    """``(start, output)`` of every chunk of ``batch_size`` scans of ``job.measurements`` as each is done, so that a
    caller can store them as they come (in scan order here; on dask in the order the chunks finish).

    ``scheduler`` "local" runs the chunks here; "distributed" sends them to the dask scheduler at ``address``
    (``HOST:PORT``) or, without one, to a new ``LocalCluster`` of ``n_workers`` processes. Workers use this
    process's torch thread count, so on the same kind of CPU the results equal the local path's bit for bit.
    Every check of the inputs runs in this call, before any chunk; the cluster starts at the first ``next``, and
    closing the iterator stops it.
    """
    method_settings(job.method, job.settings)
    if n_workers is not None and n_workers < 1:
        raise PAReconError(f"need at least 1 worker, got {n_workers}", field="--workers")
    if scheduler not in ("local", "distributed"):
        raise PAReconError(f"unknown scheduler {scheduler!r} (local or distributed)", field="--scheduler")
    op = file_operator(job.measurements, job.device)
    prior = job_prior(job, op)
    ranges = list(chunks(n_scans(job.measurements), batch_size))
    check_scans(job, ranges)
    norm = operator_norm(op, device=job.device)
    job = replace(job, op_norm=norm, threads=torch.get_num_threads(), latent_start=usable_latent_start(job, prior),
                  prior=job.prior if needs_prior(job.method) else None)  # job_prior warned about an unused one
    desc = f"reconstruct {job.method}"
    if scheduler == "local":
        return ((a, reconstruct_chunk(job, a, b)) for a, b in tqdm(ranges, desc=desc, unit="chunk"))
    return _on_dask(job, ranges, address, n_workers, desc)


def local_cluster(n_workers: int | None) -> LocalCluster:
    """A dask ``LocalCluster`` of ``n_workers`` processes (dask's choice for None), one task at a time each.

    dask gives its workers ``MALLOC_TRIM_THRESHOLD_=65536``, which stops glibc from raising its mmap threshold, so
    every large tensor is mapped and unmapped anew: two such workers spent 40 % of their time in system calls
    during MAP steps and together ran slower than one process. These workers keep glibc's default (a value in the
    environment of this process still reaches them). Workers log a failed chunk with its traceback; the error
    reaches the user as one line, so their logs are silenced. Without a dashboard the scheduler still serves its
    HTTP routes (health, metrics), on a free local port: its default, 8787, clashes with a second cluster on the
    machine and warns.
    """
    import dask
    from dask.distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.CRITICAL)


def _on_dask(job: ReconJob, ranges: list[tuple[int, int]], address: str | None, n_workers: int | None,
             desc: str) -> Iterator[tuple[int, ReconOutput]]:
    from dask.distributed import Client, as_completed

    cluster = None if address else local_cluster(n_workers)
    try:
        with Client(address or cluster, timeout="10s") as client:
            starts = {client.submit(reconstruct_chunk, job, a, b, pure=False): a for a, b in ranges}
            for future, part in tqdm(as_completed(starts, with_results=True), total=len(starts), desc=desc,
                                     unit="chunk"):
                # Dropping the future lets the worker free the chunk's result.
                yield starts.pop(future), part
    except (OSError, TimeoutError) as err:
        raise PAReconError(f"cannot reach the dask scheduler: {err}", field="--address") from None
    finally:
        if cluster is not None:
            cluster.close()
