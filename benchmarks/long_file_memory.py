"""Peak memory and time of ``pa-recon reconstruct`` and ``pa-recon evaluate`` on a long measurement file.

Usage: ``python benchmarks/long_file_memory.py [MEASUREMENTS] [--repeat 1000] [--method bp] [--batch-size 16]
[--evaluate] [--dir DIR] [-- EXTRA_RECONSTRUCT_ARGS ...]``.

Writes a measurement file whose scans (with their truth and SNRs, where the file has them) are those of
``MEASUREMENTS`` (default: the pipeline's procedural test set, ``outputs/procedural/measurements.h5``) repeated
``--repeat`` times, runs ``pa-recon reconstruct`` on it in a child process (arguments after ``--`` are passed on, e.g.
``--scheduler distributed --workers 2``), with ``--evaluate`` then ``pa-recon evaluate`` of that reconstruction, and
prints for each the wall time and the peak resident memory of its largest process (``wait4``'s ``ru_maxrss``: that
process and those it waited for, so a ``LocalCluster``'s workers but not those of a cluster at ``--address``). A child
starts with the peak of its parent, so the long file is written by a process of its own, and this one stays small.
Both commands read and write a chunk of scans at a time, so their peaks should not grow with the file's length.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pa_recon.data.hdf5io import n_scans, read_measurements, write_measurements


def write_long_file(source: str, repeat: int, path: Path) -> None:
    """Write the scans of the measurement file ``source`` (with their truth and SNRs) ``repeat`` times over to
    ``path``."""
    meas = read_measurements(source)
    write_measurements(path, np.tile(meas.data, (repeat, 1, 1)), meas.array, meas.grid,
                       np.tile(meas.noise_sigma, repeat),
                       p0=None if meas.p0 is None else np.tile(meas.p0, (repeat, 1, 1)),
                       snr_db=None if meas.snr_db is None else np.tile(meas.snr_db, repeat))


def run_measured(command: list[str]) -> tuple[float, float]:
    """Run ``command`` to its end; its wall time [s] and peak resident memory [MB]."""
    start = time.perf_counter()
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(run.pid, 0)
    seconds = time.perf_counter() - start
    if code := os.waitstatus_to_exitcode(status):
        raise subprocess.CalledProcessError(code, command)
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss: kB on Linux


def main() -> None:
    """Build the long file, reconstruct (and evaluate) it once and print scans, seconds and peak MB."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Arguments after -- go to pa-recon reconstruct (e.g. -- --scheduler "
                                            "distributed --workers 2).")
    parser.add_argument("measurements", nargs="?", default="outputs/procedural/measurements.h5")
    parser.add_argument("--repeat", type=int, default=1000, help="copies of the file's scans")
    parser.add_argument("--method", default="bp")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--evaluate", action="store_true",
                        help="evaluate the reconstruction too (the measurement file must hold the truth)")
    parser.add_argument("--dir", help="folder for the long file and its reconstruction (default: a temporary one)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:cut]), argv[cut + 1:]  # after "--": more reconstruct arguments

    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="pa_recon_memory_"))
    try:
        long_file = folder / "long.h5"
        writer = multiprocessing.get_context("spawn").Process(target=write_long_file,
                                                              args=(args.measurements, args.repeat, long_file))
        writer.start()
        writer.join()
        if writer.exitcode:
            raise SystemExit(f"writing {long_file} failed (exit code {writer.exitcode})")
        pa_recon = str(Path(sys.executable).with_name("pa-recon"))
        recon = folder / "recon.h5"
        seconds, peak = run_measured([pa_recon, "reconstruct", str(long_file), "--method", args.method,
                                      "--batch-size", str(args.batch_size), "--out", str(recon), *extra])
        print(f"{n_scans(long_file)} scans, reconstruct {' '.join([args.method, *extra])}, batch {args.batch_size}: "
              f"{seconds:.1f} s, peak {peak:.0f} MB resident")
        if args.evaluate:
            seconds, peak = run_measured([pa_recon, "evaluate", str(long_file), str(recon),
                                          "--metrics", str(folder / "metrics.json")])
            print(f"evaluate: {seconds:.1f} s, peak {peak:.0f} MB resident")
    finally:
        if not args.dir:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
