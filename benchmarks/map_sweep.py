"""Choose the image-space MAP settings on a validation set: a sweep of the prior weight λ and the start image.

Usage: ``python benchmarks/map_sweep.py [--params params.yaml] [--priors outputs/priors] [--n 8] [--seed 777]
[--lams 0.3 1 3 10] [--inits backprojection prior] [--steps N] [--json out.json]``.

The validation scans are ``--n`` phantoms of the priors' training family (``priors.data``) drawn with ``--seed``
(not a test-set seed), simulated like the pipeline's test sets (``phantoms.refine``× finer grid, every SNR of
``simulate.snr_db``). Each (prior, start, λ) runs the pipeline's ``map`` method with the params file's
``reconstruct.map`` settings (``--steps`` overrides its steps) and that λ and start, on the trained priors ``--priors``/{marginal,conditional}/prior.pt.
Prints a Markdown table of mean PSNR and SSIM (data range 1, against the block-averaged phantom), mean χ² and the
fraction of scans the discrepancy principle stopped, per prior and SNR. Run it after ``dvc repro dvc.yaml
train_prior``, then copy the best setting into ``reconstruct.map`` (one setting serves both priors).
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import torch

from pa_recon.cli.common import family_phantoms, geometry_from_params, load_params
from pa_recon.data.phantoms import downsample
from pa_recon.metrics import psnr, ssim
from pa_recon.physics import MeasurementSimulator, PATOperator
from pa_recon.priors import load_prior
from pa_recon.recon import Problem, operator_norm, reconstruct


def main() -> None:
    """Parse arguments, run the sweep, print the table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--priors", default="outputs/priors", help="folder with marginal/ and conditional/ priors")
    parser.add_argument("--n", type=int, default=8, help="validation phantoms (each simulated at every SNR)")
    parser.add_argument("--seed", type=int, default=777, help="phantom seed; keep it apart from the test sets'")
    parser.add_argument("--lams", type=float, nargs="+", default=[0.3, 1.0, 3.0, 10.0])
    parser.add_argument("--inits", nargs="+", default=["backprojection", "prior"],
                        help="MAP starts: backprojection, prior or auto")
    parser.add_argument("--steps", type=int, help="Adam steps (default: reconstruct.map.steps of --params)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    grid, array = geometry_from_params(args.params)
    fine, phantoms = family_phantoms(args.params, load_params(args.params, "priors")["data"], args.n, args.seed)
    refine = fine.nx // grid.nx
    snrs = [float(s) for s in load_params(args.params, "simulate")["snr_db"]]
    simulator = MeasurementSimulator(grid, array, refine=refine)
    generator = torch.Generator().manual_seed(args.seed)
    simulated = [simulator.simulate(torch.as_tensor(phantoms[:, None]), snr, generator) for snr in snrs]
    truth = downsample(phantoms, refine)
    op = PATOperator(grid, array)
    norm = operator_norm(op)
    base = load_params(args.params, "reconstruct").get("map", {})
    if args.steps is not None:
        base = {**base, "steps": args.steps}
    rows = []
    priors = {kind: load_prior(f"{args.priors}/{kind}/prior.pt") for kind in ("marginal", "conditional")}
    for kind, init, lam in itertools.product(priors, args.inits, args.lams):
        prior = priors[kind]
        for snr, (y, sigma) in zip(snrs, simulated):
            out = reconstruct("map", Problem(op, y, sigma, norm, prior), {**base, "lam": lam, "init": init})
            image = out.maps["image"][:, 0].numpy()
            rows.append({"prior": kind, "init": init, "lam": lam, "snr_db": snr,
                         "psnr": float(np.mean(psnr(image, truth, data_range=1.0))),
                         "ssim": float(np.mean(ssim(image, truth, data_range=1.0))),
                         "chi2": float(out.per_scan["chi2"].mean()),
                         "discrepancy_stops": float((out.per_scan["stop_reason"] == 1).float().mean())})
            print(f"{kind} {init} λ={lam:g} {snr:g} dB: {rows[-1]['psnr']:.2f} dB / {rows[-1]['ssim']:.3f}",
                  flush=True)
    print(f"{args.n} validation phantoms (seed {args.seed}) at {', '.join(f'{s:g}' for s in snrs)} dB; "
          f"{base.get('steps', 'default')} steps, reconstruct.map settings of {args.params} otherwise; torch "
          f"{torch.get_num_threads()} threads")
    print("| prior | start | λ | SNR dB | PSNR dB | SSIM | mean χ² | stopped by discrepancy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['prior']} | {r['init']} | {r['lam']:g} | {r['snr_db']:g} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
              f"{r['chi2']:.3g} | {r['discrepancy_stops']:.0%} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": args.params, "n": args.n, "seed": args.seed, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
