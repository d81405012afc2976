"""Training-step speed of the multi-scale MNIST flow (UvA DL tutorial 11): pa_recon.flows against normflows.

Usage: ``python benchmarks/flows.py [--steps N] [--warmup N] [--batch-sizes 64 128] [--devices cpu cuda] [--bf16]
[--json out.json]``. Runs in any venv that has torch; pa_recon is imported from this checkout when it is not
installed, and normflows is measured when it is importable (see benchmarks/README_flows.md).

The model, on 28x28x1 8-bit images: uniform dequantization and the tutorial's logit (alpha 1e-5), 2 checkerboard
affine couplings at 28x28 (gated-conv sub-network, hidden 32), squeeze, 2 channel couplings (hidden 48), split of
half the channels to a standard normal, squeeze, 4 channel couplings (hidden 64) at 7x7x8. Each sub-network has 3
gated blocks; log-scales are bounded by tanh. One step is loss (bits/dim) -> backward -> Adam step (lr 1e-3) on a
batch of random 8-bit images (the speed does not depend on the pixel values).

Implementations: ``pa_recon`` (pa_recon.flows modules, masked checkerboard couplings as in the tutorial);
``pa_recon-packed`` (the same with packed checkerboard couplings: the sub-network sees the kept pixels as a 28x14
image, as normflows' does); ``normflows`` (normflows' own checkerboard coupling, whose
sub-network sees the kept pixels packed into a 28x14 image: same parameters, about half the work at 28x28);
``normflows-masked`` (MaskedAffineFlow on the full 28x28 grid like the tutorial, with separate scale and shift
networks: more parameters and work at 28x28). Speed-ups pair like with like: pa_recon-packed against normflows,
pa_recon against normflows-masked. normflows has no gated-conv network, so every normflows coupling uses
pa_recon's GatedConvNet; see benchmarks/README_flows.md for every difference.

Each (implementation, device, precision, batch) is measured in a fresh process, so peak memory is its own:
CUDA: ``torch.cuda.max_memory_allocated`` over the warm-up and timed steps (parameters, gradients, Adam state and
activations). CPU: growth of the process's peak RSS (``ru_maxrss``) from after building the model to after the
steps, which includes allocator slack and is a coarser figure.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

try:
    import pa_recon  # noqa: F401  (installed: use it)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pa_recon.flows import (AffineCoupling, Flow, GaussianPrior, LogitTransform, Split, Squeeze, SubnetConfig,
                            UniformDequantization)
from pa_recon.flows.coupling import Mask
from pa_recon.flows.subnets import make_subnet

try:
    import normflows as nf
except ImportError:
    nf = None

SHAPE = (1, 28, 28)
N_BITS = 8
ALPHA = 5e-6
"""pa_recon/normflows logit alpha (x -> alpha + (1 - 2 alpha) x) equal to the tutorial's x (1 - 1e-5) + 0.5e-5."""
SCALE_BOUND = 1.0
"""Log-scale bound: the tutorial's learnable tanh bound starts at exp(0) = 1."""
BLOCKS = 3
"""Gated blocks per sub-network (the tutorial's GatedConvNet default)."""
HIDDEN = (32, 48, 64)
"""Sub-network widths at 28x28x1, 14x14x4 and 7x7x8."""

Loss = Callable[[Tensor], Tensor]


def _gated(hidden: int, n_in: int, n_out: int) -> nn.Module:
    """The tutorial's gated-conv sub-network (pa_recon's implementation, zero-initialised last convolution)."""
    return make_subnet(SubnetConfig("gated", hidden, BLOCKS), n_in, n_out)


def build_pa_recon(packed: bool = False) -> tuple[nn.Module, Loss]:
    """The tutorial's multi-scale flow from pa_recon.flows modules, and its bits/dim loss of integer images;
    ``packed``: the 28x28 couplings run their sub-networks on the packed 28x14 kept pixels (as normflows does)."""

    def coupling(channels: int, mask: Mask, i: int, hidden: int) -> AffineCoupling:
        # Parities follow the tutorial: its first checkerboard coupling keeps the pixels with odd row + col,
        # its first channel coupling keeps the first half of the channels.
        parity = i % 2 if mask == "channel" else (i + 1) % 2
        subnet = SubnetConfig("gated", hidden, BLOCKS)
        return AffineCoupling(channels, mask, parity, subnet, scale="tanh", scale_bound=SCALE_BOUND)

    layers: list[nn.Module] = [
        LogitTransform(ALPHA, 1),
        *(coupling(1, "checkerboard_packed" if packed else "checkerboard", i, HIDDEN[0]) for i in range(2)),
        Squeeze(),
        *(coupling(4, "channel", i, HIDDEN[1]) for i in range(2)),
        Split(4),
        Squeeze(),
        *(coupling(8, "channel", i, HIDDEN[2]) for i in range(4)),
    ]
    model = Flow(layers, GaussianPrior(8), SHAPE, dequantization=UniformDequantization(N_BITS))
    return model, lambda x: model.bits_per_dim(x).mean()


class _BoundedScale(nn.Module):
    """A normflows parameter map whose log-scale channels pass through ``bound * tanh(raw / bound)``, as in the
    tutorial (normflows' couplings offer unbounded exp or sigmoid scales only). The output is taken as groups of
    ``stride`` channels whose last member is a log-scale: stride 2 for AffineCoupling's interleaved (shift, scale)
    pairs, 1 for a network that outputs log-scales only.
    """

    def __init__(self, net: nn.Module, bound: float, stride: int) -> None:
        super().__init__()
        self.net, self.bound, self.stride = net, bound, stride

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        b, c, h, w = out.shape
        groups = out.view(b, c // self.stride, self.stride, h, w)
        bounded = self.bound * torch.tanh(groups[:, :, -1:] / self.bound)
        return torch.cat([groups[:, :, :-1], bounded], 2).view(b, c, h, w)


def _checkerboard_coupling(masked: bool, i: int) -> nn.Module:
    """A normflows checkerboard coupling at 28x28x1 that keeps the pixels with odd (even for odd i) row + col.

    masked=False: AffineCouplingBlock, whose split packs each half into a 28x14 image, so one sub-network sees
    only the kept pixels. masked=True: MaskedAffineFlow on the full 28x28 grid, as in the tutorial, but with
    separate log-scale and shift networks.
    """
    assert nf is not None
    if not masked:
        net = _BoundedScale(_gated(HIDDEN[0], 1, 2), SCALE_BOUND, 2)
        return nf.flows.AffineCouplingBlock(net, scale_map="exp", split_mode="checkerboard" + ("_inv" if i % 2 else ""))
    rows, cols = torch.arange(SHAPE[1])[:, None], torch.arange(SHAPE[2])[None, :]
    keep = ((rows + cols) % 2 == (i + 1) % 2).float()[None]
    scale = _BoundedScale(_gated(HIDDEN[0], 1, 1), SCALE_BOUND, 1)
    return nf.flows.MaskedAffineFlow(keep, t=_gated(HIDDEN[0], 1, 1), s=scale)


def build_normflows(masked: bool = False) -> tuple[nn.Module, Loss]:
    """The same flow from normflows (MultiscaleFlow, AffineCouplingBlock, Squeeze, Merge, Logit, DiagGaussian);
    ``masked`` picks the checkerboard coupling (see ``_checkerboard_coupling``).
    """
    assert nf is not None

    def coupling(channels: int, i: int, hidden: int) -> nn.Module:
        net = _BoundedScale(_gated(hidden, channels // 2, channels), SCALE_BOUND, 2)
        return nf.flows.AffineCouplingBlock(net, scale_map="exp", split_mode="channel" + ("_inv" if i % 2 else ""))

    # normflows lists each level's flows latent-to-data and runs them in reverse for the likelihood.
    fine = [_checkerboard_coupling(masked, i) for i in range(2)]
    middle = [coupling(4, i, HIDDEN[1]) for i in range(2)]
    coarse = [coupling(8, i, HIDDEN[2]) for i in range(4)]
    levels = [[*coarse[::-1], nf.flows.Squeeze()], [*middle[::-1], nf.flows.Squeeze(), *fine[::-1]]]
    priors = [nf.distributions.DiagGaussian((8, 7, 7), trainable=False),
              nf.distributions.DiagGaussian((2, 14, 14), trainable=False)]
    model = nf.MultiscaleFlow(priors, levels, [nf.flows.Merge("channel")], transform=nf.transforms.Logit(ALPHA),
                              class_cond=False)
    dims = math.prod(SHAPE)

    def loss(x: Tensor) -> Tensor:
        y = (x + torch.rand_like(x)) / 2**N_BITS
        log_p = model.log_prob(y, None) - dims * N_BITS * math.log(2.0)
        return -log_p.mean() / (dims * math.log(2.0))

    return model, loss


BUILDERS: dict[str, Callable[[], tuple[nn.Module, Loss]]] = {
    "pa_recon": build_pa_recon, "pa_recon-packed": lambda: build_pa_recon(packed=True)}
if nf is not None:
    BUILDERS["normflows"] = build_normflows
    BUILDERS["normflows-masked"] = lambda: build_normflows(masked=True)


@dataclass(frozen=True)
class Case:
    """One measurement: implementation, device, precision ("fp32" or "bf16" autocast), batch size, step counts."""

    impl: str
    device: str
    precision: str
    batch: int
    steps: int
    warmup: int


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def measure(case: Case) -> dict[str, Any]:
    """Median seconds per training step, images/s, peak memory (MiB) and parameter count for ``case``."""
    torch.manual_seed(0)
    cuda = case.device == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    model, loss_fn = BUILDERS[case.impl]()
    model.to(case.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, 2**N_BITS, (case.batch, *SHAPE), device=case.device).float()
    rss_before = _peak_rss_mib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(case.device, torch.bfloat16, enabled=case.precision == "bf16"):
            loss = loss_fn(x)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(case.warmup):
        step()
    times = [step() for _ in range(case.steps)]
    seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mib() - rss_before
    return {**asdict(case), "step_ms": 1e3 * seconds, "step_ms_min": 1e3 * min(times),
            "step_ms_max": 1e3 * max(times), "images_per_s": case.batch / seconds, "peak_mib": peak,
            "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads()}


def run_isolated(cases: list[Case]) -> list[dict[str, Any]]:
    """``measure`` each case in its own freshly spawned process (clean peak-memory counters, no shared caches)."""
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.map(measure, cases, chunksize=1)


def hardware(device: str) -> str:
    """A one-line name of the CPU or GPU."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


PAIRS = {"normflows": "pa_recon-packed", "normflows-masked": "pa_recon"}
"""normflows build -> the pa_recon build with the same checkerboard coupling (packed 28x14 or masked 28x28)."""


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """normflows step time / the matching pa_recon build's (see ``PAIRS``), for every (device, precision, batch)
    that has both."""
    by_key = {(r["impl"], r["device"], r["precision"], r["batch"]): r for r in rows}
    return [{"baseline": r["impl"], "ours": PAIRS[r["impl"]], "device": r["device"], "precision": r["precision"],
             "batch": r["batch"], "speedup": r["step_ms"] / ours["step_ms"]}
            for r in rows if r["impl"] in PAIRS
            and (ours := by_key.get((PAIRS[r["impl"]], r["device"], r["precision"], r["batch"]))) is not None]


def main() -> None:
    """Parse arguments, measure every case, print the Markdown table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"],
                        default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--impls", nargs="+", choices=sorted(BUILDERS), default=list(BUILDERS))
    parser.add_argument("--bf16", action="store_true", help="also measure under bf16 autocast")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if "cuda" in args.devices and not torch.cuda.is_available():
        parser.error("--devices cuda: CUDA is not available")

    precisions = ["fp32", "bf16"] if args.bf16 else ["fp32"]
    cases = [Case(impl, device, precision, batch, args.steps, args.warmup)
             for device in args.devices for precision in precisions for batch in args.batch_sizes
             for impl in args.impls]
    rows = run_isolated(cases)
    speedups = ratios(rows)
    info = {"torch": torch.__version__, "normflows": getattr(nf, "__version__", None),
            "hardware": {d: hardware(d) for d in args.devices}, "cpu_threads": rows[0]["threads"],
            "steps": args.steps, "warmup": args.warmup,
            "peak_memory": {"cuda": "torch.cuda.max_memory_allocated", "cpu": "ru_maxrss growth during the steps"}}

    print(f"torch {info['torch']}, normflows {info['normflows'] or 'not installed'}; "
          + "; ".join(f"{d}: {h}" for d, h in info["hardware"].items())
          + f"; {info['cpu_threads']} CPU threads; median of {args.steps} steps after {args.warmup} warm-up")
    print("| implementation | device | precision | batch | ms/step (median) | min–max ms | images/s | peak MiB "
          "| parameters |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['impl']} | {r['device']} | {r['precision']} | {r['batch']} | {r['step_ms']:.1f} | "
              f"{r['step_ms_min']:.0f}–{r['step_ms_max']:.0f} | {r['images_per_s']:.1f} | {r['peak_mib']:.0f} | "
              f"{r['params']:,} |")
    for s in speedups:
        print(f"{s['ours']} speed-up over {s['baseline']}, {s['device']} {s['precision']} batch {s['batch']}: "
              f"{s['speedup']:.2f}×")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**info, "rows": rows, "speedups": speedups}, f, indent=2)


if __name__ == "__main__":
    main()
