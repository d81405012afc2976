"""Speed and accuracy of the PAT operator against a k-space time-stepping solver, at the reference geometry.

Usage: ``python benchmarks/physics.py [--json out.json] [--repeats N]``. Prints a Markdown table: ms per image
for forward and adjoint at batch 1 and 32 on CPU (and CUDA when present), the time stepper's ms per image, and
both solvers' relative L2 error against the semi-analytic Gaussian solution (σ = 2 px).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from pa_recon.physics import Grid, KSpaceTimeStepper, LinearArray, PATOperator
from pa_recon.physics.analytic import gaussian_pressure, gaussian_source
from pa_recon.bench.runs import median_seconds

GRID = Grid(nx=128, nz=128, dx=1e-4)
ARRAY = LinearArray.uniform(128, 1e-4, fs=30e6, n_samples=400, sound_speed=1500.0)


def relative_error(y: torch.Tensor, ref: np.ndarray) -> float:
    """‖y − ref‖ / ‖ref‖ for one scan's data."""
    return float(np.linalg.norm(y[0].double().cpu().numpy() - ref) / np.linalg.norm(ref))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    sigma = 2 * GRID.dx
    ref = gaussian_pressure(ARRAY, 0.0, 64 * GRID.dx, sigma)
    source = torch.as_tensor(gaussian_source(GRID, 0.0, 64 * GRID.dx, sigma), dtype=torch.float32)[None, None]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows: list[dict[str, object]] = []
    for device in devices:
        start = time.perf_counter()
        op = PATOperator(GRID, ARRAY, dtype=torch.float32, device=device)
        build_s = time.perf_counter() - start
        error = relative_error(op(source.to(device)), ref)
        for batch in (1, 32):
            x = source.to(device).repeat(batch, 1, 1, 1)
            y = op(x)
            with torch.no_grad():
                fwd = median_seconds(lambda: op(x), device, args.repeats)
                adj = median_seconds(lambda: op.adjoint(y), device, args.repeats)
            rows.append({"solver": "PATOperator float32", "device": device, "batch": batch,
                         "forward_ms_per_image": 1e3 * fwd / batch, "adjoint_ms_per_image": 1e3 * adj / batch,
                         "build_s": build_s, "relative_error": error})
        stepper = KSpaceTimeStepper(GRID, ARRAY, dtype=torch.float32, device=device)
        x = source.to(device)
        step_s = median_seconds(lambda: stepper.simulate(x), device, max(2, args.repeats // 5))
        rows.append({"solver": "k-space time stepper float32", "device": device, "batch": 1,
                     "forward_ms_per_image": 1e3 * step_s, "adjoint_ms_per_image": float("nan"), "build_s": 0.0,
                     "relative_error": relative_error(stepper.simulate(x), ref)})

    hardware = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    print(f"Reference geometry 128×128, dx 0.1 mm, 128 elements, 400 samples; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, {hardware}")
    print("| solver | device | batch | forward ms/image | adjoint ms/image | rel. L2 error vs analytic |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['solver']} | {r['device']} | {r['batch']} | {r['forward_ms_per_image']:.3g} | "
              f"{r['adjoint_ms_per_image']:.3g} | {r['relative_error']:.1e} |")
    for device in devices:
        per_device = [r for r in rows if r["device"] == device]
        stepper_ms = per_device[-1]["forward_ms_per_image"]
        for r in per_device[:-1]:
            print(f"speed-up over the time stepper on {device}, batch {r['batch']}: "
                  f"{stepper_ms / r['forward_ms_per_image']:.0f}×")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"hardware": hardware, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
