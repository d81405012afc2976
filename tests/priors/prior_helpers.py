"""Tiny geometries and randomly perturbed priors shared by the prior tests."""

from __future__ import annotations

from typing import Any

import torch

from pa_recon.flows.registry import randomize_parameters
from pa_recon.physics import Grid, LinearArray
from pa_recon.priors import FlowPrior, flow_config_for

#: A 4×4 grid (16 pixels, so float64 brute-force Jacobians are cheap) and an 8×8 one for physics-backed tests.
GRID4 = Grid(nx=4, nz=4, dx=2e-4)
GRID8 = Grid(nx=8, nz=8, dx=1e-4)
ARRAY8 = LinearArray.uniform(8, 1e-4, fs=3e7, n_samples=24, center_frequency=5e6, element_width=8e-5)

TINY_FLOW: dict[str, Any] = {
    "architecture": "glow", "levels": 2, "steps": 1, "subnet": {"kind": "resnet", "hidden": 8, "blocks": 1},
    "cond_features": 3, "encoder_width": 4, "injector": True,
}


def make_prior(kind: str, grid: Grid = GRID4, array: LinearArray = ARRAY8, dtype: torch.dtype = torch.float64,
               seed: int = 0, alpha: float = 0.05) -> FlowPrior:
    """A ``kind`` prior (logit margin ``alpha``) with every parameter perturbed (no layer is an identity), ActNorms
    marked initialised."""
    torch.manual_seed(seed)
    prior = FlowPrior(flow_config_for(kind, TINY_FLOW, grid), grid, array, alpha=alpha)
    return randomize_parameters(prior, scale=0.1, seed=seed).to(dtype).eval()


def images(n: int, grid: Grid = GRID4, low: float = 0.0, high: float = 1.0, dtype: torch.dtype = torch.float64,
           seed: int = 0) -> torch.Tensor:
    """``(n, 1, nz, nx)`` images uniform in ``[low, high]``."""
    g = torch.Generator().manual_seed(seed)
    return (low + (high - low) * torch.rand(n, 1, grid.nz, grid.nx, generator=g, dtype=torch.float64)).to(dtype)


def condition(n: int, grid: Grid = GRID4, dtype: torch.dtype = torch.float64, seed: int = 1) -> torch.Tensor:
    """A stand-in condition image ``(n, 1, nz, nx)`` in ``[-1, 1]``."""
    return 2 * images(n, grid, dtype=dtype, seed=seed) - 1
