"""Speed of reconstruction with a flow prior: image-space MAP on one scan and 100 posterior samples.

Usage: ``python benchmarks/recon.py [--params params.yaml] [--prior-params profiles/gpu.yaml] [--devices cpu cuda]
[--modes graph eager] [--parts map batch posterior] [--batch 16] [--compile] [--cudnn-benchmark] [--profile N]
[--channels-last] [--optimizer adam|lbfgs] [--json out.json]``. The geometry comes
from ``--params``; the priors' architectures from ``--prior-params`` (default: the same file), built untrained
(speed does not depend on the weights). The MAP steps are those of ``reconstruct.map.optimizer`` (Adam unless set;
``--optimizer`` overrides it). Prints, per device (CPU, and CUDA when present) and way of running the
steps (``--modes``: op by op, or replayed as a captured CUDA graph): seconds for MAP
(``reconstruct.map.steps`` steps, marginal and conditional prior, one scan; the first call, which pays the
warm-up and the capture, apart), seconds for the start images that ``init: auto`` gives (not in the MAP columns):
the TV image for the marginal prior, and a latent MAP of ``reconstruct.map.latent_steps`` steps for the conditional
one, each on one scan; seconds per scan when ``--batch`` scans are reconstructed
together (conditional prior: the MAP steps, and apart their latent-MAP start), for 100 posterior samples of one
scan (conditional prior), and for the same 100 samples refined by ``reconstruct.posterior.refine_steps`` steps of
randomise-then-optimise (when set). On CUDA a float64 check first confirms that CUDA-graph steps give the same
iterates as op-by-op ones. Goals: MAP ≤ 2 s on a GPU, ≤ 60 s on the 2-core CPU; 100 samples ≤ 1 s on a GPU.

``--compile`` compiles the priors' passes (``FlowPrior.compile_passes``); the first MAP call column then holds the
compilation. ``--channels-last`` stores the priors' 4-D weights channels-last, which puts their convolutions and the
channel norms between them in that layout (fewer layout copies per pass). ``--cudnn-benchmark`` lets cuDNN time its
convolution algorithms for each shape first (off by default, as in ``pa-recon reconstruct``). ``--profile N`` first
prints, per device and prior, where the time of one op-by-op MAP step on one scan goes (from N profiled steps): the
kernels (CUDA) or operators (CPU) with the most time. Each figure is also printed as soon as it is measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile

from pa_recon.bench.runs import median_seconds
from pa_recon.cli.common import geometry_from_params, load_params
from pa_recon.physics import Grid, LinearArray, PATOperator
from pa_recon.priors import FlowPrior, flow_config_for
from pa_recon.recon import (
    AdamSettings,
    LBFGSSettings,
    descent_settings,
    map_image,
    map_latent,
    method_settings,
    operator_norm,
    posterior_sampling,
)
from pa_recon.recon.latent import LATENT_SETTINGS

KINDS = ("marginal", "conditional")


def test_problem(op: PATOperator, n_scans: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Data ``(n_scans, n_elements, n_samples)`` of a horizontal line at a third of the depth, and σ at 1 % of
    the peak."""
    x = torch.zeros(n_scans, *op.image_shape, dtype=op.kernel.dtype, device=op.kernel.device)
    x[..., op.grid.nz // 3, :] = 1.0
    y = op(x)
    return y, 0.01 * y.abs().max() * torch.ones(n_scans, dtype=y.dtype, device=y.device)


def frozen_priors(flows: dict, grid: Grid, array: LinearArray, device: str, dtype: torch.dtype = torch.float32,
                  compile_passes: bool = False, channels_last: bool = False) -> dict[str, FlowPrior]:
    """Untrained marginal and conditional priors of the configured architectures, without gradients (their passes
    compiled when ``compile_passes``; their 4-D weights, and so their convolutions, channels-last when
    ``channels_last``)."""
    priors = {}
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for kind in KINDS:
        prior = FlowPrior(flow_config_for(kind, flows[kind], grid), grid, array)
        priors[kind] = prior.to(device=device, dtype=dtype, memory_format=layout).eval().requires_grad_(False)
        if compile_passes:
            prior.compile_passes()
    return priors


def graph_matches_eager(grid: Grid, array: LinearArray, flows: dict, descent: AdamSettings | LBFGSSettings,
                        steps: int = 20, channels_last: bool = False) -> float:
    """Largest difference between CUDA-graph and op-by-op runs of image MAP and latent MAP with the step rule of
    ``descent``, and of refined posterior samples (Adam), in float64 (where a wrong capture shows and rounding does
    not)."""
    op = PATOperator(grid, array, dtype=torch.float64, device="cuda")
    y, sigma = test_problem(op, 2)
    priors = frozen_priors(flows, grid, array, "cuda", torch.float64, channels_last=channels_last)
    for prior in priors.values():  # the ActNorm layers' data-dependent initialisation, outside the comparison
        prior.nll(torch.rand(2, *op.image_shape, dtype=torch.float64, device="cuda"), prior.condition(op, y))
    worst = 0.0
    for graph in (True, False):
        rule = replace(descent, steps=steps, tau=None, cuda_graph=graph)
        torch.manual_seed(0)
        images = [map_image(op, y, sigma, p, x0="backprojection", settings=rule).image for p in priors.values()]
        images += [map_latent(op, y, sigma, p, settings=replace(rule, lr=LATENT_SETTINGS.lr)).image
                   for p in priors.values()]
        refine = AdamSettings(steps=steps, tau=None, cuda_graph=graph)
        images.append(posterior_sampling(op, y, sigma, priors["conditional"], n_samples=4, chi2_tol=None,
                                         refine=refine, generator=torch.Generator("cuda").manual_seed(1)).mean)
        if graph:
            reference = images
        else:
            worst = max(float((a - b).abs().max()) for a, b in zip(reference, images))
    return worst


#: How the steps run: settings fields per mode (CUDA graphs exist on CUDA only).
MODES = {"eager": {"cuda_graph": False}, "graph": {"cuda_graph": True}}
PARTS = ("map", "batch", "posterior")
COLUMNS = {"map_marginal_first_s": "first MAP call, marginal [s]", "map_marginal_s": "MAP marginal [s]",
           "map_conditional_s": "MAP conditional [s]", "tv_start_s": "TV start, marginal [s]",
           "latent_start_s": "latent-MAP start, conditional [s]",
           "map_conditional_batch_s_per_scan": "MAP conditional, batch [s per scan]",
           "latent_start_batch_s_per_scan": "latent-MAP start, batch [s per scan]",
           "posterior_100_s": "100 posterior samples [s]",
           "posterior_100_refined_s": "100 samples with RTO steps [s]"}


def first_and_median(fn: Callable[[], object], device: str) -> tuple[float, float]:
    """Seconds of the first call of ``fn`` (the warm-up and the CUDA-graph capture included) and of a later one."""
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, median_seconds(fn, device, 1)


def step_profile(grid: Grid, array: LinearArray, flows: dict, device: str, descent: AdamSettings | LBFGSSettings,
                 steps: int, top: int = 12, channels_last: bool = False) -> str:
    """Per prior: operator calls (CUDA kernels on CUDA) and their time per op-by-op image-MAP step on one scan,
    averaged over ``steps`` profiled steps after an unprofiled run (the start image, made once, spread over them),
    with the ``top`` entries by own time."""
    op = PATOperator(grid, array, device=device)
    y, sigma = test_problem(op, 1)
    rule = replace(descent, steps=steps, tau=0.0, cuda_graph=False)
    cuda = device == "cuda"
    lines = []
    for kind, prior in frozen_priors(flows, grid, array, device, channels_last=channels_last).items():
        def run(p: FlowPrior = prior) -> None:
            map_image(op, y, sigma, p, x0="backprojection", settings=rule)
            if cuda:
                torch.cuda.synchronize()
        run()
        with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            run()
        # map_image evaluates the objective steps + 1 times; the per-step figures divide by that.
        events = [e for e in prof.key_averages() if not cuda or e.device_type.name == "CUDA"]
        own = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
        events.sort(key=own, reverse=True)
        per = steps + 1
        lines.append(f"{kind} prior, {device}: {sum(e.count for e in events) / per:.0f} "
                     f"{'kernels' if cuda else 'operator calls'} and {sum(map(own, events)) / per / 1e3:.2f} ms "
                     f"{'of GPU time' if cuda else 'own CPU time (nested calls counted once)'} per step")
        lines += [f"  {own(e) / per / 1e3:8.3f} ms  {e.count / per:6.1f}×  {e.key[:100]}" for e in events[:top]]
    return "\n".join(lines)


def timings(grid: Grid, array: LinearArray, flows: dict, settings: dict, device: str, mode: str, batch: int,
            parts: list[str], compile_passes: bool = False, channels_last: bool = False) -> dict:
    """One row of the table: seconds for each reconstruction of ``parts`` on ``device``, steps run as ``mode``,
    the priors' passes compiled when ``compile_passes``, their convolutions channels-last when ``channels_last``."""
    op = PATOperator(grid, array, device=device)
    y, sigma = test_problem(op, batch)
    priors = frozen_priors(flows, grid, array, device, compile_passes=compile_passes, channels_last=channels_last)
    map_settings = method_settings("map", settings.get("map"))
    steps, latent_steps = int(map_settings["steps"]), int(map_settings["latent_steps"])
    optimizer = map_settings["optimizer"]
    posterior = method_settings("posterior", settings.get("posterior"))
    # tau=0 never meets the discrepancy principle, so every run takes all the steps; the back-projection start
    # because an untrained prior's central image can make the first step non-finite (which would end the run).
    rule = replace(descent_settings(map_settings), tau=0.0, **MODES[mode])
    # The starts as map_image makes them: zero image-space steps leave one evaluation of the objective.
    latent = replace(rule, steps=latent_steps, lr=LATENT_SETTINGS.lr)
    start_only = replace(rule, steps=0)
    row = {"device": device, "mode": mode, "optimizer": optimizer, "map_steps": steps, "latent_steps": latent_steps,
           "batch": batch, "refine_steps": int(posterior["refine_steps"])}

    def put(column: str, seconds: float) -> None:
        row[column] = seconds
        print(f"  {device}, {mode}: {COLUMNS[column]} {seconds:.3g}", flush=True)

    if "map" in parts:
        for kind, prior in priors.items():
            first, later = first_and_median(
                lambda p=prior: map_image(op, y[:1], sigma[:1], p, x0="backprojection", settings=rule), device)
            if kind == "marginal":
                put("map_marginal_first_s", first)
            put(f"map_{kind}_s", later)
        norm = operator_norm(op, device=device)
        for column, kind, start in (("tv_start_s", "marginal", "tv"), ("latent_start_s", "conditional", "latent")):
            put(column, median_seconds(
                lambda p=priors[kind], x0=start: map_image(op, y[:1], sigma[:1], p, x0=x0, op_norm=norm,
                                                           settings=start_only, latent_settings=latent),
                device, 1))
    if "batch" in parts:
        put("map_conditional_batch_s_per_scan", median_seconds(
            lambda: map_image(op, y, sigma, priors["conditional"], x0="backprojection", settings=rule), device,
            1) / batch)
        put("latent_start_batch_s_per_scan", median_seconds(
            lambda: map_image(op, y, sigma, priors["conditional"], x0="latent", settings=start_only,
                              latent_settings=latent), device, 1) / batch)
    if "posterior" in parts:
        put("posterior_100_s", median_seconds(
            lambda: posterior_sampling(op, y[:1], sigma[:1], priors["conditional"], n_samples=100, chunk=50,
                                       chi2_tol=None), device, 1))
        if row["refine_steps"]:
            refine = AdamSettings(steps=row["refine_steps"], lr=posterior["refine_lr"], tau=None, **MODES[mode])
            put("posterior_100_refined_s", median_seconds(
                lambda: posterior_sampling(op, y[:1], sigma[:1], priors["conditional"], n_samples=100, chunk=50,
                                           chi2_tol=None, refine=refine), device, 1))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prior-params", help="params file with the priors' flow settings (default: --params)")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"],
                        default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["graph", "eager"],
                        help="how the steps run: op by op, or replayed as a CUDA graph (CUDA only)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--batch", type=int, default=16, help="scans reconstructed together for the per-scan figure")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="on CUDA, first check in float64 that CUDA-graph steps equal op-by-op ones")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN time its convolution algorithms per shape (CUDA)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the priors' passes (FlowPrior.compile_passes); the first MAP call compiles")
    parser.add_argument("--channels-last", action="store_true",
                        help="store the priors' 4-D weights channels-last, so their convolutions run in that layout")
    parser.add_argument("--profile", type=int, metavar="N", default=0,
                        help="first print where one MAP step's time goes, from N profiled steps")
    parser.add_argument("--optimizer", choices=("adam", "lbfgs"),
                        help="MAP step rule (default: reconstruct.map.optimizer of --params)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if "cuda" in args.devices and not torch.cuda.is_available():
        parser.error("--devices cuda: CUDA is not available")
    grid, array = geometry_from_params(args.params)
    flows = load_params(args.prior_params or args.params, "priors")["flow"]
    settings = load_params(args.params, "reconstruct")
    if args.optimizer:
        settings["map"] = {**settings.get("map", {}), "optimizer": args.optimizer}
    descent = descent_settings(method_settings("map", settings.get("map")))
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    result: dict = {"rows": [], "cudnn_benchmark": args.cudnn_benchmark, "compile": args.compile,
                    "channels_last": args.channels_last}
    if args.profile:
        for device in args.devices:
            print(step_profile(grid, array, flows, device, descent, args.profile, channels_last=args.channels_last))
    mismatch = False
    if "cuda" in args.devices and args.check:
        difference = graph_matches_eager(grid, array, flows, descent, channels_last=args.channels_last)
        result["graph_vs_eager_float64_max_abs"] = difference
        print(f"CUDA graph against op-by-op steps (float64, 20 steps): largest difference {difference:.2e}")
        mismatch = difference > 1e-9
        if mismatch:
            print("the captured CUDA graph does NOT reproduce the op-by-op steps")
    result["hardware"] = hardware = torch.cuda.get_device_name() if "cuda" in args.devices else (
        platform.processor() or "CPU")
    refine_steps = int(method_settings("posterior", settings.get("posterior"))["refine_steps"])
    print(f"{grid.nz}×{grid.nx} grid, {array.n_elements} elements × {array.n_samples} samples; torch "
          f"{torch.__version__}, {torch.get_num_threads()} CPU threads; {hardware}; batch {args.batch}, "
          f"{refine_steps} RTO steps; cuDNN benchmark {'on' if args.cudnn_benchmark else 'off'}; "
          f"passes {'compiled' if args.compile else 'not compiled'}; "
          f"{'channels-last' if args.channels_last else 'NCHW'} weights; "
          f"{'L-BFGS' if isinstance(descent, LBFGSSettings) else 'Adam'} MAP steps")
    print("| device | steps run | MAP steps | " + " | ".join(COLUMNS.values()) + " |")
    print("|---" * (3 + len(COLUMNS)) + "|")
    for device in args.devices:
        for mode in args.modes:
            if device == "cpu" and mode == "graph":
                continue
            r = timings(grid, array, flows, settings, device, mode, args.batch, args.parts, args.compile,
                        args.channels_last)
            result["rows"].append(r)
            cells = [f"{r[k]:.3g}" if k in r else "–" for k in COLUMNS]
            print(f"| {device} | {mode} | {r['map_steps']} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if mismatch:
        sys.exit(1)


if __name__ == "__main__":
    main()
