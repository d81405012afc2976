"""Photoacoustic sub-commands: phantoms → simulate → reconstruct → evaluate."""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Mapping
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from pa_recon.batch import ReconJob, file_sha256, reconstruct_chunks
from pa_recon.checks import check_count, check_number
from pa_recon.cli.common import (
    add_device_option,
    batches,
    check_family,
    check_keys,
    declare_outputs,
    family_phantoms,
    geometry_from_params,
    load_params,
    pick_device,
)
from pa_recon.data.hdf5io import (
    data_digest,
    n_scans,
    read_measurements,
    read_phantoms,
    read_reconstructions,
    reconstruction_writer,
    valid_member_name,
    write_measurements,
    write_phantoms,
)
from pa_recon.data.ipasc import import_ipasc
from pa_recon.data.phantoms import downsample
from pa_recon.errors import PAReconError
from pa_recon.evaluation import evaluate_files
from pa_recon.physics import Grid, LinearArray, MeasurementSimulator, estimate_noise_sigma
from pa_recon.recon import METHODS, method_names, method_settings, needs_prior, parse_method
from pa_recon.report import (
    add_paired_gains,
    read_metrics_json,
    results_table,
    save_panel,
    summarise,
    write_metrics_json,
    write_per_scan_csv,
    write_text,
)

T = TypeVar("T")

#: Keys of a ``test_sets`` entry: the phantom family (as :func:`~pa_recon.data.families.make_phantoms` takes it),
#: the number of phantoms and their seed.
TEST_SET_KEYS = ("source", "vessels", "split", "n", "seed")


def cmd_phantoms(args: argparse.Namespace) -> None:
    """Write one test set's phantoms on the simulation grid (the reconstruction grid refined ``refine`` times)."""
    test_sets = load_params(args.params, "test_sets")
    if args.set not in test_sets:
        raise PAReconError(f"unknown test set; defined: {sorted(test_sets)}", file=args.params,
                           field=f"test_sets.{args.set}")
    settings = {"n": 16, "seed": 0, **check_keys(test_sets[args.set], TEST_SET_KEYS, file=args.params,
                                                  field=f"test_sets.{args.set}")}
    check_family(args.params, f"test_sets.{args.set}", settings)
    fine, images = family_phantoms(args.params, settings, settings["n"], settings["seed"])
    write_phantoms(args.out, images, fine.to_dict(),
                   attrs={"test_set": args.set, "source": settings.get("source", "procedural"),
                          "seed": settings["seed"]})


def cmd_simulate(args: argparse.Namespace) -> None:
    """Simulate noisy data of each phantom at each SNR of the ``simulate`` section, with coarse ground truth.

    ``simulate.snr_db``: a non-empty list of SNRs (dB), or one SNR; ``simulate.seed``: the noise seed (default 0).
    """
    settings = check_keys(load_params(args.params, "simulate"), ("snr_db", "seed"), file=args.params,
                          field="simulate", required=("snr_db",))
    snr_db = settings["snr_db"] if isinstance(settings["snr_db"], list) else [settings["snr_db"]]
    if not snr_db:
        raise PAReconError("must be a non-empty list of numbers", file=args.params, field="simulate.snr_db")
    snrs = [check_number(snr, "simulate.snr_db", file=args.params) for snr in snr_db]
    seed = check_count(settings.get("seed", 0), "simulate.seed", file=args.params)
    grid, array = geometry_from_params(args.params)
    phantoms = read_phantoms(args.phantoms)
    fine = Grid.from_dict(phantoms.grid)
    refine = fine.nx // grid.nx
    if fine != grid.refined(refine) or refine < 2:
        raise PAReconError(f"phantom grid {fine} is not the reconstruction grid {grid} refined by an integer >= 2",
                           file=args.phantoms, field="/grid")
    device = pick_device(args.device)
    simulator = MeasurementSimulator(grid, array, refine=refine, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    n = phantoms.images.shape[0]
    data = np.empty((len(snrs) * n, array.n_elements, array.n_samples), dtype=np.float32)
    sigma = np.empty(len(snrs) * n, dtype=np.float32)
    for k, snr in enumerate(snrs):
        for start, stop in batches(n, args.batch_size, f"simulate {snr:g} dB"):
            p0 = torch.as_tensor(phantoms.images[start:stop, None], device=device)
            y, s = simulator.simulate(p0, snr, generator)
            data[k * n + start:k * n + stop], sigma[k * n + start:k * n + stop] = y.cpu().numpy(), s.cpu().numpy()
    truth = np.tile(downsample(phantoms.images, refine), (len(snrs), 1, 1))
    write_measurements(args.out, data, array.to_dict(), grid.to_dict(), sigma, p0=truth,
                       snr_db=np.repeat(snrs, n), attrs={"source_phantoms": Path(args.phantoms).name})


def cmd_import_ipasc(args: argparse.Namespace) -> None:
    """Convert an IPASC (PACFISH) file from a linear array into the measurement layout on the params grid."""
    grid, params_array = geometry_from_params(args.params)
    data, array = import_ipasc(args.ipasc, grid=grid.to_dict(), wavelength_index=args.wavelength,
                               sound_speed=args.sound_speed)
    # IPASC files carry no sensor band; the params' one tells where in the spectrum the data hold only noise.
    band = replace(LinearArray.from_dict(array), center_frequency=params_array.center_frequency,
                   fractional_bandwidth=params_array.fractional_bandwidth)
    sigma = (np.full(data.shape[0], args.noise_sigma) if args.noise_sigma is not None
             else estimate_noise_sigma(torch.as_tensor(data, dtype=torch.float64), band).numpy())
    write_measurements(args.out, data, array, grid.to_dict(), sigma, attrs={"source_ipasc": Path(args.ipasc).name})


def cmd_reconstruct(args: argparse.Namespace) -> None:
    """Reconstruct every scan of a measurement file with one method, in chunks, here or on a dask cluster."""
    spec = parse_method(args.method)
    name = args.name or spec.name
    if not valid_member_name(name):
        raise PAReconError(f"{name!r} cannot name a reconstruction (no '/', not empty, '.' or '..')", field="--name")
    # One worker is what the local scheduler is, so --workers 1 there says nothing to warn about.
    if args.scheduler != "distributed" and (args.address or args.workers not in (None, 1)):
        warnings.warn("--address and --workers apply to --scheduler distributed only; they are ignored", stacklevel=1)
    sections = (check_keys(load_params(args.params, "reconstruct"), METHODS, file=args.params, field="reconstruct")
                if args.params else {})
    try:
        # Every method's section, so that a typo in one this run does not use is not left for a later run.
        settings = {method: method_settings(method, values) for method, values in sections.items()}
    except PAReconError as err:
        raise PAReconError(err.message, file=args.params, field=err.field) from None
    job = ReconJob(args.measurements, spec.method, settings.get(spec.method) or method_settings(spec.method),
                   device=str(pick_device(args.device)), seed=args.seed, prior=args.prior,
                   prior_kind=spec.prior_kind, allow_geometry_mismatch=args.allow_geometry_mismatch,
                   compile=args.compile, latent_start=args.latent_start)
    # The inputs are checked here, before an output file is begun.
    parts = reconstruct_chunks(job, args.batch_size, scheduler=args.scheduler, address=args.address,
                               n_workers=args.workers)
    with_prior = bool(args.prior and needs_prior(spec.method))
    attrs = {"method": args.method, "prior": args.prior if with_prior else "",
             "prior_sha256": file_sha256(args.prior) if with_prior else "",
             **{f"settings_{k}": str(v) for k, v in job.settings.items()}}
    # Each chunk goes to the file as it is done, so memory holds one chunk whatever the file's length; the file
    # appears only once every scan is written.
    with closing(parts), reconstruction_writer(args.out, n_scans(args.measurements),
                                               read_measurements(args.measurements, stop=1).grid,
                                               Path(args.measurements).name, attrs=attrs,
                                               source_digest=data_digest(args.measurements)) as writer:
        for start, part in parts:
            writer.put(start, {name: part.maps["image"]}, maps=_named(name, part.maps),
                       per_scan=_named(name, part.per_scan), labels=_named(name, part.labels))


def _named(name: str, values: Mapping[str, T]) -> dict[str, T]:
    """``values`` but the image, keyed ``<name>_<key>`` as the maps and per-scan datasets of reconstruction
    ``name`` are."""
    return {f"{name}_{k}": v for k, v in values.items() if k != "image"}


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Metrics JSON, per-scan CSVs and PNG panels of reconstructions against the measurement file's truth.

    Every input is read and checked and every metric computed (a chunk of scans at a time, see
    :func:`~pa_recon.evaluation.evaluate_files`) before the first output is written, and the metrics JSON (the file
    that marks an evaluation as done) is written last.
    """
    if args.n_figures < 0:
        raise PAReconError(f"must be >= 0, got {args.n_figures}", field="--n-figures")
    for flag in ("plots", "figures"):
        if getattr(args, flag) and Path(getattr(args, flag)) == Path(args.metrics):
            raise PAReconError(f"is also the --{flag} folder", file=args.metrics, field="--metrics")
    evaluation = evaluate_files(args.measurements, args.reconstructions, progress=True)
    per_scan, groups = evaluation.per_scan, evaluation.groups
    if args.ranking:
        add_paired_gains(per_scan, args.ranking)
    summary = summarise(per_scan, groups)
    if args.figures:
        figures = Path(args.figures)
        figures.mkdir(parents=True, exist_ok=True)
        for i in np.linspace(0, len(groups) - 1, min(args.n_figures, len(groups))).astype(int):
            meas = read_measurements(args.measurements, start=i, stop=i + 1)
            recons = [read_reconstructions(path, start=i, stop=i + 1) for path in args.reconstructions]
            grid = Grid.from_dict(meas.grid)
            extent = (grid.x()[0] * 1e3, grid.x()[-1] * 1e3, grid.nz * grid.dx * 1e3, 0.0)
            scores = ", ".join(f"{m} {per_scan[m]['psnr'][i]:.1f} dB" for m in evaluation.sources)
            shown = {name: m[0] for r in recons for name, m in r.maps.items() if name.endswith(("_std", "_flags"))}
            save_panel(figures / f"scan{i:04d}.png", meas.p0[0], meas.data[0],
                       {m: s[0] for r in recons for m, s in r.images.items()},
                       f"scan {i} ({groups[i]}): PSNR {scores}", extent, shown)
    if args.plots:
        plots = Path(args.plots)
        plots.mkdir(parents=True, exist_ok=True)
        for metric in ("psnr", "ssim", "chi2"):
            write_per_scan_csv(plots / f"{metric}_per_scan.csv", per_scan, metric, groups)
    write_metrics_json(args.metrics, summary)


def cmd_report(args: argparse.Namespace) -> None:
    """Combine the metrics JSON of several test sets (named by their folder) into one Markdown table."""
    files: dict[str, str] = {}
    for path in args.summaries:
        name = Path(os.path.abspath(path)).parent.name  # abspath: metrics.json in the working folder has a name
        if name in files:
            raise PAReconError(f"test set {name!r} again, after {files[name]}: each row is named by the folder of its "
                               "metrics file, so give each set its own folder name", file=path)
        files[name] = path
    write_text(args.out, results_table({name: read_metrics_json(path) for name, path in files.items()}))


def register(sub: argparse._SubParsersAction) -> None:
    """Add the photoacoustic sub-commands: phantoms, simulate, reconstruct, evaluate."""
    p = sub.add_parser("phantoms", help="write a test set of vessel phantoms (HDF5) on the simulation grid")
    p.add_argument("--params", default="params.yaml", help="params file (geometry, phantoms, test_sets)")
    p.add_argument("--out", required=True, help="phantom file to write (HDF5)")
    p.add_argument("--set", required=True, help="name of a test set in the params file's test_sets section")
    p.set_defaults(func=cmd_phantoms)
    declare_outputs(p, files=["out"])

    p = sub.add_parser("simulate", help="phantoms → noisy limited-view measurements (HDF5)")
    p.add_argument("phantoms")
    p.add_argument("--params", default="params.yaml", help="params file (geometry, simulate)")
    p.add_argument("--out", required=True, help="measurement file to write (HDF5)")
    p.add_argument("--batch-size", type=int, default=8, help="phantoms simulated together")
    add_device_option(p, "where to simulate")
    p.set_defaults(func=cmd_simulate)
    declare_outputs(p, files=["out"])

    p = sub.add_parser("import-ipasc", help="IPASC/PACFISH HDF5 of a linear array → measurement file")
    p.add_argument("ipasc")
    p.add_argument("--out", required=True, help="measurement file to write (HDF5)")
    p.add_argument("--params", default="params.yaml", help="params file whose geometry.grid is the recon grid")
    p.add_argument("--wavelength", type=int, default=0, help="wavelength index to import")
    p.add_argument("--sound-speed", type=float, help="m/s; overrides or stands in for the file's value")
    p.add_argument("--noise-sigma", type=float,
                   help="noise std in data units (default: estimated per scan from the data)")
    p.set_defaults(func=cmd_import_ipasc)
    declare_outputs(p, files=["out"])

    p = sub.add_parser("reconstruct", help="measurements → reconstructions (HDF5)")
    p.add_argument("measurements")
    p.add_argument("--method", required=True, metavar="METHOD",
                   help=f"one of {', '.join(method_names())}; a -marginal or -conditional suffix checks the prior's "
                        "kind, and names the output <method>_<kind> (settings: reconstruct.<method>)")
    p.add_argument("--out", required=True, help="reconstruction file to write (HDF5)")
    p.add_argument("--params", help="params file whose reconstruct.<method> section overrides the defaults")
    p.add_argument("--prior", help="prior file (.pt) for the methods that need one")
    p.add_argument("--allow-geometry-mismatch", action="store_true",
                   help="use a prior trained for another pixel size or array (warns)")
    p.add_argument("--compile", action="store_true",
                   help="compile the prior's passes with torch.compile: faster steps, mostly on a GPU, after a "
                        "compilation of seconds to minutes per chunk shape")
    p.add_argument("--latent-start", metavar="FILE",
                   help="map: the output of a map_latent run on the same measurements with the same prior, taken as "
                        "the latent start (init latent, or auto with a conditional prior) instead of computing it; "
                        "a file made with other latent settings is not used (warns). Ignored by other starts")
    p.add_argument("--name", help="name of the reconstruction in the output (default: METHOD, with _ for -)")
    p.add_argument("--batch-size", type=int, default=16, help="scans per chunk")
    add_device_option(p, "where to reconstruct")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws (posterior samples)")
    p.add_argument("--scheduler", default="local", choices=("local", "distributed"),
                   help="distributed: spread chunks over a dask cluster")
    p.add_argument("--address", help="dask scheduler HOST:PORT (default: start a LocalCluster)")
    p.add_argument("--workers", type=int, help="LocalCluster worker processes (default: dask's choice)")
    p.set_defaults(func=cmd_reconstruct)
    declare_outputs(p, files=["out"])

    p = sub.add_parser("evaluate", help="metrics JSON, per-scan CSV plots and PNG panels")
    p.add_argument("measurements", help="measurement file holding the ground truth")
    p.add_argument("reconstructions", nargs="+")
    p.add_argument("--metrics", required=True, help="metrics JSON to write")
    p.add_argument("--plots", help="folder for per-scan CSVs (none without it)")
    p.add_argument("--figures", help="folder for PNG panels (none without it)")
    p.add_argument("--n-figures", type=int, default=4, help="PNG panels to draw, of scans spread over the file")
    p.add_argument("--ranking", nargs="+", metavar="METHOD",
                   help="methods, expected worst first: each gets its per-scan PSNR/SSIM gain over the one before")
    p.set_defaults(func=cmd_evaluate)
    declare_outputs(p, files=["metrics"], folders=["plots", "figures"])

    p = sub.add_parser("report", help="one Markdown table from the metrics JSON of several test sets")
    p.add_argument("summaries", metavar="metrics", nargs="+",
                   help="metrics JSON files of evaluate; each test set is named by its file's folder, so these "
                        "folders need different names")
    p.add_argument("--out", required=True, help="Markdown file to write")
    p.set_defaults(func=cmd_report)
    declare_outputs(p, files=["out"])
