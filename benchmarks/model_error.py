"""Model error of the pipeline's simulated data on its reconstruction grid, next to the noise levels.

Usage: ``python benchmarks/model_error.py [--params params.yaml] [--set procedural] [--n 4] [--iters 300]
[--bands 3.5e6:0.8 5e6:1.2] [--json out.json]``.

The pipeline simulates data on a grid ``phantoms.refine`` times finer than the reconstruction grid (no inverse
crime). For ``--n`` phantoms of the test set ``--set`` and each sensor band (centre frequency : fractional
bandwidth; default: the params file's), this prints, as relative L2 norms of the clean data:

- ``truth misfit``: ‖A x_true − y‖ / ‖y‖ with A the reconstruction-grid operator and x_true the block-averaged
  phantom (the pipeline's ground truth);
- ``floor``: ‖A x* − y‖ / ‖y‖ with x* the least-squares image (CGLS in float64, ``--iters`` iterations): the smallest
  misfit any image on the grid reaches;
- the relative noise 10^(−SNR/20) of each SNR in ``simulate.snr_db``.

When the floor exceeds the noise, the grid cannot represent what the sensor records: every reconstruction's χ²
stays far above 1, the discrepancy principle never stops, and a MAP weighted by the true σ fits model error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch

from pa_recon.cli.common import family_phantoms, geometry_from_params, load_params
from pa_recon.data.phantoms import downsample
from pa_recon.physics import PATOperator
from pa_recon.recon.cgls import cgls


def relative_misfit(op: PATOperator, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """‖A x − y‖ / ‖y‖ per scan, ``(B,)``."""
    return ((op(x) - y).norm(dim=(1, 2)) / y.norm(dim=(1, 2))).numpy()


def main() -> None:
    """Parse arguments, measure each band, print a Markdown table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", default="procedural", help="a test set of the params file")
    parser.add_argument("--n", type=int, default=4, help="phantoms")
    parser.add_argument("--iters", type=int, default=300, help="CGLS iterations for the floor")
    parser.add_argument("--bands", nargs="*", default=[], help="CENTRE_HZ:FRACTIONAL_BANDWIDTH (default: params)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    grid, array = geometry_from_params(args.params)
    spec = load_params(args.params, "test_sets")[args.set]
    fine_grid, phantoms = family_phantoms(args.params, spec, args.n, int(spec.get("seed", 0)))
    refine = fine_grid.nx // grid.nx
    fine_p0 = torch.as_tensor(phantoms, dtype=torch.float64)[:, None]
    truth = torch.as_tensor(downsample(phantoms, refine), dtype=torch.float64)[:, None]
    bands = [tuple(float(v) for v in b.split(":")) for b in args.bands] or [
        (array.center_frequency, array.fractional_bandwidth)]
    snrs = [float(s) for s in load_params(args.params, "simulate")["snr_db"]]
    rows = []
    for centre, fraction in bands:
        band = dataclasses.replace(array, center_frequency=centre, fractional_bandwidth=fraction)
        coarse = PATOperator(grid, band, dtype=torch.float64)
        y = PATOperator(fine_grid, band, dtype=torch.float64)(fine_p0)
        least_squares = cgls(coarse, y, lam=0.0, n_iter=args.iters, tol=0.0).image
        rows.append({"center_frequency": centre, "fractional_bandwidth": fraction,
                     "truth_misfit": float(relative_misfit(coarse, truth, y).mean()),
                     "floor": float(relative_misfit(coarse, least_squares, y).mean()),
                     "floor_max": float(relative_misfit(coarse, least_squares, y).max())})
    noise = {f"{s:g} dB": 10 ** (-s / 20) for s in snrs}
    print(f"{args.n} phantoms of test set {args.set!r}, {grid.nz}×{grid.nx} grid (dx {grid.dx * 1e3:g} mm), "
          f"data simulated on a {refine}× finer grid; relative noise: "
          + ", ".join(f"{k}: {v:.3f}" for k, v in noise.items()))
    print("| centre MHz | fractional bandwidth | truth misfit | floor (mean) | floor (max) |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['center_frequency'] / 1e6:g} | {r['fractional_bandwidth']:g} | {r['truth_misfit']:.3f} | "
              f"{r['floor']:.4f} | {r['floor_max']:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": args.params, "set": args.set, "n": args.n, "iters": args.iters,
                       "relative_noise": noise, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
