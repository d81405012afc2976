"""Measurements shared by the benchmarks: parameter counts and wall-clock timing of a callable on CPU or CUDA.
(The run record of a training folder is :mod:`pa_recon.train.runs`.)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def device_of(model: nn.Module) -> torch.device:
    """The device of a model's parameters."""
    return next(model.parameters()).device


def median_seconds(fn: Callable[[], object], device: torch.device | str, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls after one warm-up call (CUDA work is
    synchronised before each clock reading)."""
    cuda = torch.device(device).type == "cuda"
    fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
