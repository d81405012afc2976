"""Wall-clock timing shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch


def seconds_per_call(fn: Callable[[], object], repeats: int, device: str) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after one warm-up, seconds."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))
