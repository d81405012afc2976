"""Speed of reconstruction with a flow prior: image-space MAP on one scan and 100 posterior samples.

Usage: ``python benchmarks/recon.py [--params params.yaml] [--prior-params profiles/gpu.yaml] [--json out.json]``.
The geometry comes from ``--params``; the priors' architectures from ``--prior-params`` (default: the same
file), built untrained (speed does not depend on the weights). Prints, per device (CPU, and CUDA when
present): seconds for MAP (``reconstruct.map.steps`` Adam steps, marginal and conditional prior, one scan), for
100 posterior samples of one scan (conditional prior), and for the same 100 samples refined by
``reconstruct.posterior.refine_steps`` steps of randomise-then-optimise (when set). Goals: MAP ≤ 2 s on a GPU,
≤ 60 s on the 2-core CPU; 100 samples ≤ 1 s on a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from pa_recon.cli.common import geometry_from_params, load_params
from pa_recon.physics import PATOperator
from pa_recon.priors import FlowPrior, flow_config_for
from pa_recon.recon import AdamSettings, map_image, method_settings, posterior_sampling
from pa_recon.bench.runs import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prior-params", help="params file with the priors' flow settings (default: --params)")
    parser.add_argument("--json")
    args = parser.parse_args()
    grid, array = geometry_from_params(args.params)
    flows = load_params(args.prior_params or args.params, "priors")["flow"]
    settings = load_params(args.params, "reconstruct")
    steps = int(settings.get("map", {}).get("steps", 500))
    posterior = method_settings("posterior", settings.get("posterior"))
    refine_steps = int(posterior["refine_steps"])
    rows = []
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        op = PATOperator(grid, array, device=device)
        x = torch.zeros(1, *op.image_shape, device=device)
        x[..., grid.nz // 3, :] = 1.0
        y = op(x)
        sigma = 0.01 * y.abs().max() * torch.ones(1, device=device)
        priors = {kind: FlowPrior(flow_config_for(kind, flows[kind], grid), grid, array).to(device).eval()
                  for kind in ("marginal", "conditional")}
        for prior in priors.values():
            prior.requires_grad_(False)
        # tau=0 never meets the discrepancy principle, so every run takes all the steps; the back-projection start
        # because an untrained prior's central image can make the first step non-finite (which would end the run).
        adam = AdamSettings(steps=steps, tau=0.0)
        row = {"device": device, "map_steps": steps}
        for kind, prior in priors.items():
            row[f"map_{kind}_s"] = median_seconds(
                lambda p=prior: map_image(op, y, sigma, p, x0="backprojection", settings=adam), device, 1)
        row["posterior_100_s"] = median_seconds(
            lambda: posterior_sampling(op, y, sigma, priors["conditional"], n_samples=100, chunk=50, chi2_tol=None),
            device, 1)
        if refine_steps:
            refine = AdamSettings(steps=refine_steps, lr=posterior["refine_lr"], tau=None)
            row["posterior_100_refined_s"] = median_seconds(
                lambda: posterior_sampling(op, y, sigma, priors["conditional"], n_samples=100, chunk=50, chi2_tol=None,
                                           refine=refine), device, 1)
        rows.append(row)
    hardware = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "CPU"
    print(f"{grid.nz}×{grid.nx} grid, {array.n_elements} elements × {array.n_samples} samples; torch "
          f"{torch.__version__}, {torch.get_num_threads()} CPU threads; {hardware}")
    print("| device | MAP steps | MAP marginal [s] | MAP conditional [s] | 100 posterior samples [s] "
          f"| 100 samples, {refine_steps} RTO steps [s] |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        refined = f"{r['posterior_100_refined_s']:.2f}" if refine_steps else "–"
        print(f"| {r['device']} | {r['map_steps']} | {r['map_marginal_s']:.2f} | {r['map_conditional_s']:.2f} | "
              f"{r['posterior_100_s']:.2f} | {refined} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"hardware": hardware, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
