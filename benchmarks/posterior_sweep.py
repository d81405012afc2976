"""Choose the posterior's randomise-then-optimise settings on a validation set: a sweep of the refinement's steps
and learning rate.

Usage: ``python benchmarks/posterior_sweep.py [--params params.yaml] [--prior outputs/priors/conditional/prior.pt]
[--n 6] [--seed 777] [--test-set NAME] [--steps 30] [--lrs 0.05 0.15 0.3] [--samples N ...] [--json out.json]``.

The validation scans are ``--n`` phantoms of the priors' training family (or of ``test_sets.<--test-set>``'s
family) drawn with ``--seed`` (not a test-set seed), simulated at every SNR of ``simulate.snr_db``. Each (steps,
rate, samples) runs the pipeline's ``posterior`` method with the params file's ``reconstruct.posterior`` settings,
that ``refine_steps``, ``refine_lr`` and ``n_samples`` (default: the params file's), and the same sample seed.
Prints a Markdown table per SNR: PSNR of the posterior mean (data range 1, against the block-averaged phantom),
coverage of the 68 % and 95 % intervals, flag AUROC for errors above 0.2, the mean pixel std, the χ² of the mean
against noise plus model error (1 for a data-consistent mean), the fraction of accepted samples, the fraction of
scans flagged as a whole (``scan_flag``), and seconds per scan.
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
from pa_recon.metrics import flag_auroc, interval_coverage, psnr
from pa_recon.priors import load_prior
from pa_recon.recon import Problem, chi_square, method_settings, reconstruct, total_sigma


def main() -> None:
    """Parse arguments, run the sweep, print the table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, n=6)
    parser.add_argument("--prior", default="outputs/priors/conditional/prior.pt", help="a conditional prior")
    parser.add_argument("--steps", type=int, nargs="+", default=[30], help="refine_steps values")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.05, 0.15, 0.3], help="refine_lr values")
    parser.add_argument("--samples", type=int, nargs="+", help="n_samples values (default: the params file's)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    scans = scans_from(args)
    prior = load_prior(args.prior)
    base = method_settings("posterior", load_params(args.params, "reconstruct").get("posterior", {}))
    rows = []
    for steps, lr, n_samples, (snr, (y, sigma)) in itertools.product(
            args.steps, args.lrs, args.samples or [base["n_samples"]], scans.data.items()):
        settings = {**base, "refine_steps": steps, "refine_lr": lr, "n_samples": n_samples}
        problem = Problem(scans.op, y, sigma, scans.op_norm, prior, torch.Generator().manual_seed(args.seed))
        start = time.perf_counter()
        out = reconstruct("posterior", problem, settings)
        seconds = (time.perf_counter() - start) / len(y)
        mean, std, score = (out.maps[k][:, 0].numpy() for k in ("image", "std", "flag_score"))
        likelihood_sigma = total_sigma(y, sigma, settings["model_error"])
        rows.append({"refine_steps": steps, "refine_lr": lr, "n_samples": n_samples, "snr_db": snr,
                     "psnr": float(np.mean(psnr(mean, scans.truth, data_range=1.0))),
                     **{f"coverage{round(100 * level)}": float(np.mean(interval_coverage(
                         mean, std, scans.truth, level, out.per_scan["samples"])))
                        for level in (0.68, 0.95)},
                     "auroc": float(np.nanmean(flag_auroc(score, mean, scans.truth))),
                     "std": float(std.mean()),
                     "chi2_mean": float(chi_square(scans.op, out.maps["image"], y, likelihood_sigma).mean()),
                     "acceptance": float(out.per_scan["acceptance"].mean()),
                     "flagged_scans": float(out.per_scan["scan_flag"].float().mean()), "seconds_per_scan": seconds})
        print(f"{steps} steps, rate {lr:g}, {n_samples} samples, {snr:g} dB: {rows[-1]['psnr']:.2f} dB, "
              f"cov95 {rows[-1]['coverage95']:.3f}, AUROC {rows[-1]['auroc']:.3f}", flush=True)
    print(f"{args.n} validation phantoms (seed {args.seed}, family {args.test_set or 'priors.data'}); "
          f"reconstruct.posterior settings of {args.params} otherwise; torch {torch.get_num_threads()} threads")
    print("| refine steps | refine rate | samples | SNR dB | PSNR dB | cov68 | cov95 | AUROC | mean std | χ² of mean "
          "(noise + model error) | accepted | flagged scans | s / scan |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['refine_steps']} | {r['refine_lr']:g} | {r['n_samples']} | {r['snr_db']:g} | {r['psnr']:.2f} | "
              f"{r['coverage68']:.3f} | {r['coverage95']:.3f} | {r['auroc']:.3f} | {r['std']:.3f} | "
              f"{r['chi2_mean']:.2f} | {r['acceptance']:.0%} | {r['flagged_scans']:.0%} | "
              f"{r['seconds_per_scan']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": args.params, "n": args.n, "seed": args.seed, "test_set": args.test_set,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
