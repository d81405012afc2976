"""Choose the image-space MAP settings on a validation set: a sweep of the prior weight λ, the start image and the
model error.

Usage: ``python benchmarks/map_sweep.py [--params params.yaml] [--priors outputs/priors] [--n 8] [--seed 777]
[--test-set NAME] [--lams 0.3 1 3 10] [--inits backprojection prior tv] [--model-errors 0 0.03] [--steps N]
[--optimizers adam lbfgs] [--json out.json]``.

The validation scans are ``--n`` phantoms of the priors' training family (``priors.data``; or of
``test_sets.<--test-set>``'s family, to check a choice out of distribution) drawn with ``--seed``
(not a test-set seed), simulated like the pipeline's test sets (``phantoms.refine``× finer grid, every SNR of
``simulate.snr_db``). Each (prior, start, model error, λ) runs the pipeline's ``map`` method with the params file's
``reconstruct.map`` settings (``--steps`` overrides its steps, ``--optimizers`` its optimizer) and that λ, start
and ``model_error``, on the trained
priors ``--priors``/{marginal,conditional}/prior.pt; the ``tv`` method with the params file's settings is the
reference. Prints a Markdown table of mean PSNR and SSIM (data range 1, against the block-averaged phantom), mean
χ² (against the noise alone), the fraction of scans the discrepancy principle stopped and the mean final MAP
objective (nats; the JSON has it per scan), and the seconds per scan, per prior and SNR. Run it
after ``dvc repro dvc.yaml train_prior``, then copy the best setting into ``reconstruct.map`` (``lam`` may name one
weight per kind of prior; the other settings serve both priors, and ``model_error`` also ``map_latent`` and
``posterior``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch

from validation import add_arguments, scans_from

from pa_recon.cli.common import load_params
from pa_recon.metrics import psnr, ssim
from pa_recon.priors import load_prior
from pa_recon.recon import Problem, reconstruct


def main() -> None:
    """Parse arguments, run the sweep, print the table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, n=8)
    parser.add_argument("--priors", default="outputs/priors", help="folder with marginal/ and conditional/ priors")
    parser.add_argument("--lams", type=float, nargs="+", default=[0.3, 1.0, 3.0, 10.0])
    parser.add_argument("--inits", nargs="+", default=["backprojection", "prior"],
                        help="MAP starts: backprojection, prior, tv or auto")
    parser.add_argument("--model-errors", type=float, nargs="+", default=[0.0],
                        help="model errors relative to the data RMS (reconstruct.map.model_error)")
    parser.add_argument("--steps", type=int, help="steps (default: reconstruct.map.steps of --params)")
    parser.add_argument("--optimizers", nargs="+", choices=("adam", "lbfgs"),
                        help="step rules (default: reconstruct.map.optimizer of --params, else adam)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    scans = scans_from(args)
    op, norm, truth = scans.op, scans.op_norm, scans.truth
    base = load_params(args.params, "reconstruct").get("map", {})
    if args.steps is not None:
        base = {**base, "steps": args.steps}
    optimizers = args.optimizers or [base.get("optimizer", "adam")]
    rows = []

    def add_row(method: str, problem: Problem, settings: dict, **labels: object) -> None:
        start = time.perf_counter()
        out = reconstruct(method, problem, settings)
        seconds = (time.perf_counter() - start) / problem.y.shape[0]
        image = out.maps["image"][:, 0].numpy()
        stops, objective = out.per_scan.get("stop_reason"), out.per_scan.get("objective")
        rows.append({**labels, "psnr": float(np.mean(psnr(image, truth, data_range=1.0))),
                     "ssim": float(np.mean(ssim(image, truth, data_range=1.0))),
                     "chi2": float(out.per_scan["chi2"].mean()),
                     "discrepancy_stops": None if stops is None else float((stops == 1).float().mean()),
                     "objective": None if objective is None else objective.tolist(), "seconds_per_scan": seconds})
        print(" ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in labels.values()),
              f"dB: {rows[-1]['psnr']:.2f} dB / {rows[-1]['ssim']:.3f}", flush=True)

    tv_settings = load_params(args.params, "reconstruct").get("tv", {})
    for snr, (y, sigma) in scans.data.items():
        add_row("tv", Problem(op, y, sigma, norm), tv_settings, prior="-", optimizer="-", init="tv (reference)",
                model_error=None, lam=None, snr_db=snr)
    priors = {kind: load_prior(f"{args.priors}/{kind}/prior.pt") for kind in ("marginal", "conditional")}
    for kind, optimizer, init, eta, lam in itertools.product(priors, optimizers, args.inits, args.model_errors,
                                                             args.lams):
        for snr, (y, sigma) in scans.data.items():
            settings = {**base, "optimizer": optimizer, "lam": lam, "init": init, "model_error": eta}
            add_row("map", Problem(op, y, sigma, norm, priors[kind]), settings, prior=kind, optimizer=optimizer,
                    init=init, model_error=eta, lam=lam, snr_db=snr)
    print(f"{args.n} validation phantoms (seed {args.seed}, family {args.test_set or 'priors.data'}) at "
          f"{', '.join(f'{s:g}' for s in scans.data)} dB; "
          f"{base.get('steps', 'default')} steps, reconstruct.map settings of {args.params} otherwise; torch "
          f"{torch.get_num_threads()} threads")
    print("| prior | optimizer | start | model error | λ | SNR dB | PSNR dB | SSIM | mean χ² | "
          "stopped by discrepancy | mean objective (nats) | s / scan |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        eta, lam, stops = ("–" if r[k] is None else f"{r[k]:{f}}" for k, f in
                           (("model_error", "g"), ("lam", "g"), ("discrepancy_stops", ".0%")))
        objective = "–" if r["objective"] is None else f"{np.mean(r['objective']):.0f}"
        print(f"| {r['prior']} | {r['optimizer']} | {r['init']} | {eta} | {lam} | {r['snr_db']:g} | {r['psnr']:.2f} | "
              f"{r['ssim']:.3f} | {r['chi2']:.3g} | {stops} | {objective} | {r['seconds_per_scan']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": args.params, "n": args.n, "seed": args.seed, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
