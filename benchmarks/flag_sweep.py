"""How well the hallucination flags can rank large errors: the flag AUROC of each cue alone and of a grid of
combination rules, on validation scans.

Usage: ``python benchmarks/flag_sweep.py [--params params.yaml] [--prior outputs/priors/conditional/prior.pt]
[--n 6] [--seed 777] [--test-set NAME] [--std-scales 0.05 0.1 0.2 0.4 0.8] [--std-pools 0 0.5 1 1.5 2]
[--null-scales ...] [--weights 0 0.5 1] [--top 10] [--json out.json]``.

The validation scans are ``--n`` phantoms of the priors' training family (or of ``test_sets.<--test-set>``'s
family) drawn with ``--seed``, simulated at every SNR of ``simulate.snr_db``. The pipeline's ``posterior`` method
(the params file's ``reconstruct.posterior`` settings, sample seed ``--seed``) runs once per SNR; the cues of its
mean are then scored under every rule (:func:`pa_recon.recon.flag_score`): each ``std_scale`` × ``std_pool`` ×
``null_scale`` × weight triple from ``--weights`` (all three 0 left out). Prints the flag AUROC for errors above 0.2 (the mean over
scans, per SNR, and over both) of the params file's rule, of each cue's raw value (no scale: the ranking a cue
gives alone) and of the ``--top`` rules by their mean over the SNRs.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable

import numpy as np
import torch
from validation import add_arguments, scans_from

from pa_recon.cli.common import load_params
from pa_recon.metrics import flag_auroc
from pa_recon.priors import load_prior
from pa_recon.recon import (FlagRule, Problem, flag_rule, flag_score, method_settings, null_space_component,
                            presence_contradiction, reconstruct)

#: A flag map ``(B, 1, nz, nx)`` from the cues (std, unseen part, contradiction) of one SNR's scans.
Scorer = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def main() -> None:
    """Parse arguments, run the posterior once per SNR, score every rule, print the table and optionally JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, n=6)
    parser.add_argument("--prior", default="outputs/priors/conditional/prior.pt", help="a conditional prior")
    parser.add_argument("--std-scales", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4, 0.8])
    parser.add_argument("--std-pools", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0],
                        help="widths (pixels) over which the std is pooled")
    parser.add_argument("--null-scales", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4, 0.8])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="values of each weight")
    parser.add_argument("--top", type=int, default=10, help="rules to print, best first")
    parser.add_argument("--json", help="also write every rule's figures to this JSON file")
    args = parser.parse_args()

    scans = scans_from(args)
    prior = load_prior(args.prior)
    settings = method_settings("posterior", load_params(args.params, "reconstruct").get("posterior", {}))
    pipeline_rule = flag_rule(settings)
    cues: dict[float, dict[str, torch.Tensor]] = {}
    for snr, (y, sigma) in scans.data.items():
        problem = Problem(scans.op, y, sigma, scans.op_norm, prior, torch.Generator().manual_seed(args.seed))
        maps = reconstruct("posterior", problem, settings).maps
        mean = maps["image"]
        null = null_space_component(scans.op, mean, lam=pipeline_rule.null_lam_fraction * scans.op_norm**2,
                                    n_iter=pipeline_rule.null_iter)
        cues[snr] = {"image": mean, "std": maps["std"], "null": null,
                     "contradiction": presence_contradiction(mean, maps["presence"], settings["presence_threshold"])}
        print(f"{snr:g} dB: posterior of {len(y)} scans done", flush=True)

    def aurocs(scorer: Scorer) -> dict[str, float]:
        per_snr = {f"{snr:g}": float(np.nanmean(flag_auroc(scorer(c)[:, 0].numpy(), c["image"][:, 0].numpy(),
                                                              scans.truth)))
                   for snr, c in cues.items()}
        return {**per_snr, "mean": float(np.mean(list(per_snr.values())))}

    def rule_scorer(rule: FlagRule) -> Scorer:
        return lambda c: flag_score(c["std"], c["null"], c["contradiction"], rule)

    fixed = {"pipeline rule": aurocs(rule_scorer(pipeline_rule)), "std alone": aurocs(lambda c: c["std"]),
             "unseen part (absolute) alone": aurocs(lambda c: c["null"].abs()),
             "contradiction alone": aurocs(lambda c: c["contradiction"])}
    rules = []
    for std_scale, std_pool, null_scale, weights in itertools.product(args.std_scales, args.std_pools,
                                                                       args.null_scales,
                                                                       itertools.product(args.weights, repeat=3)):
        if any(weights):
            rule = FlagRule(std_scale=std_scale, std_pool=std_pool, null_scale=null_scale, weights=weights)
            rules.append({"std_scale": std_scale, "std_pool": std_pool, "null_scale": null_scale,
                          "weights": list(weights), "auroc": aurocs(rule_scorer(rule))})
    rules.sort(key=lambda r: -r["auroc"]["mean"])

    snrs = [f"{snr:g}" for snr in cues]
    print(f"{args.n} validation phantoms (seed {args.seed}, family {args.test_set or 'priors.data'}); posterior "
          f"settings of {args.params}; flag AUROC for errors above 0.2; {len(rules)} rules")
    print(f"| flag map | {' | '.join(f'{s} dB' for s in snrs)} | mean |")
    print(f"|---|{'---:|' * (len(snrs) + 1)}")
    rows = [(name, a) for name, a in fixed.items()]
    rows += [(f"std_scale {r['std_scale']:g}, std_pool {r['std_pool']:g}, null_scale {r['null_scale']:g}, weights "
              f"({', '.join(f'{w:g}' for w in r['weights'])})", r["auroc"]) for r in rules[:args.top]]
    for name, a in rows:
        print(f"| {name} | {' | '.join(f'{a[s]:.3f}' for s in snrs)} | {a['mean']:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": args.params, "n": args.n, "seed": args.seed, "test_set": args.test_set,
                       "fixed": fixed, "rules": rules}, f, indent=2)


if __name__ == "__main__":
    main()
