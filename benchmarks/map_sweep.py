"""Choose the image-space MAP settings on a validation set: a sweep of the prior weight λ, the start image and the
model error.

Usage: ``python benchmarks/map_sweep.py [--params params.yaml] [--priors outputs/priors] [--n 8] [--seed 777]
[--test-set NAME] [--kinds marginal conditional] [--lams 0.3 1 3 10] [--inits backprojection prior tv]
[--model-errors 0 0.03] [--steps N] [--optimizers adam lbfgs] [--latent-nll-max none -3.12] [--json out.json]``.

The validation scans are ``--n`` phantoms of the priors' training family (``priors.data``; or of
``test_sets.<--test-set>``'s family, to check a choice out of distribution) drawn with ``--seed``
(not a test-set seed), simulated like the pipeline's test sets (``phantoms.refine``× finer grid, every SNR of
``simulate.snr_db``). Each (prior, start, model error, λ) runs the pipeline's ``map`` method with the params file's
``reconstruct.map`` settings (``--steps`` overrides its steps, ``--optimizers`` its optimizer) and that λ, start
and ``model_error``, on the trained
priors ``--priors``/{marginal,conditional}/prior.pt; the ``tv`` method with the params file's settings is the
reference. Prints a Markdown table of mean PSNR and SSIM (data range 1, against the block-averaged phantom), mean
χ² (against the noise alone), the fraction of scans the discrepancy principle stopped and the mean final MAP
objective (nats; the JSON has it per scan), and the seconds per scan, per prior and SNR. With a latent start it
also prints the 5, 50 and 95 % quantiles of the prior's NLL of that start (nats per pixel; the JSON has it per
scan) and the share of scans that ``--latent-nll-max`` (``init: auto`` only) sent to the TV start. Run it
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
from pa_recon.recon.map import START_KINDS


def main() -> None:
    """Parse arguments, run the sweep, print the table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, n=8)
    parser.add_argument("--priors", default="outputs/priors", help="folder with marginal/ and conditional/ priors")
    parser.add_argument("--kinds", nargs="+", choices=("marginal", "conditional"),
                        default=["marginal", "conditional"], help="which of the priors to sweep")
    parser.add_argument("--lams", type=float, nargs="+", default=[0.3, 1.0, 3.0, 10.0])
    parser.add_argument("--inits", nargs="+", default=["backprojection", "prior"],
                        help="MAP starts: backprojection, prior, tv or auto")
    parser.add_argument("--model-errors", type=float, nargs="+", default=[0.0],
                        help="model errors relative to the data RMS (reconstruct.map.model_error)")
    parser.add_argument("--steps", type=int, help="steps (default: reconstruct.map.steps of --params)")
    parser.add_argument("--optimizers", nargs="+", choices=("adam", "lbfgs"),
                        help="step rules (default: reconstruct.map.optimizer of --params, else adam)")
    parser.add_argument("--latent-nll-max", type=_optional_float, nargs="+",
                        help="reconstruct.map.latent_nll_max values ('none': never; default: --params' setting)")
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
        start, start_nll = out.per_scan.get("start"), out.per_scan.get("start_nll")
        rows.append({**labels, "psnr": float(np.mean(psnr(image, truth, data_range=1.0))),
                     "ssim": float(np.mean(ssim(image, truth, data_range=1.0))),
                     "chi2": float(out.per_scan["chi2"].mean()),
                     "discrepancy_stops": None if stops is None else float((stops == 1).float().mean()),
                     "objective": None if objective is None else objective.tolist(),
                     "start_nll": None if start_nll is None else start_nll.tolist(),
                     "tv_starts": None if start is None else float((start == START_KINDS.index("tv")).float().mean()),
                     "seconds_per_scan": seconds})
        print(" ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in labels.values()),
              f"dB: {rows[-1]['psnr']:.2f} dB / {rows[-1]['ssim']:.3f}", flush=True)

    tv_settings = load_params(args.params, "reconstruct").get("tv", {})
    for snr, (y, sigma) in scans.data.items():
        add_row("tv", Problem(op, y, sigma, norm), tv_settings, prior="-", optimizer="-", init="tv (reference)",
                model_error=None, lam=None, snr_db=snr)
    priors = {kind: load_prior(f"{args.priors}/{kind}/prior.pt") for kind in args.kinds}
    nll_maxes = args.latent_nll_max or [base.get("latent_nll_max")]
    for kind, optimizer, init, eta, lam, nll_max in itertools.product(priors, optimizers, args.inits,
                                                                      args.model_errors, args.lams, nll_maxes):
        nll_max = nll_max if init == "auto" and priors[kind].conditional else None
        for snr, (y, sigma) in scans.data.items():
            settings = {**base, "optimizer": optimizer, "lam": lam, "init": init, "model_error": eta,
                        "latent_nll_max": nll_max}
            add_row("map", Problem(op, y, sigma, norm, priors[kind]), settings, prior=kind, optimizer=optimizer,
                    init=init, model_error=eta, lam=lam, latent_nll_max=nll_max, snr_db=snr)
    print(f"{args.n} validation phantoms (seed {args.seed}, family {args.test_set or 'priors.data'}) at "
          f"{', '.join(f'{s:g}' for s in scans.data)} dB; "
          f"{base.get('steps', 'default')} steps, reconstruct.map settings of {args.params} otherwise; torch "
          f"{torch.get_num_threads()} threads")
    print("| prior | optimizer | start | model error | λ | latent NLL max | SNR dB | PSNR dB | SSIM | mean χ² | "
          "stopped by discrepancy | mean objective (nats) | latent-start NLL / pixel, 5/50/95 % | TV starts | "
          "s / scan |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        eta, lam, nll_max, stops, tv_starts = ("–" if r.get(k) is None else f"{r[k]:{f}}" for k, f in
                                               (("model_error", "g"), ("lam", "g"), ("latent_nll_max", "g"),
                                                ("discrepancy_stops", ".0%"), ("tv_starts", ".0%")))
        objective = "–" if r["objective"] is None else f"{np.mean(r['objective']):.0f}"
        nll = ("–" if r["start_nll"] is None
               else " / ".join(f"{q:.2f}" for q in np.quantile(r["start_nll"], [0.05, 0.5, 0.95])))
        print(f"| {r['prior']} | {r['optimizer']} | {r['init']} | {eta} | {lam} | {nll_max} | {r['snr_db']:g} | "
              f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['chi2']:.3g} | {stops} | {objective} | {nll} | {tv_starts} | "
              f"{r['seconds_per_scan']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": args.params, "n": args.n, "seed": args.seed, "rows": rows}, f, indent=2)


def _optional_float(text: str) -> float | None:
    """A number, or ``None`` for 'none'."""
    return None if text.lower() == "none" else float(text)


if __name__ == "__main__":
    main()
