"""Benchmark measurements: trainable-parameter counts, a model's device and the median of timed calls."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pa_recon.bench import runs
from pa_recon.bench.runs import count_parameters, device_of, median_seconds


def test_parameter_count_skips_frozen_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    assert count_parameters(model) == 3 * 4 + 4 + 4 * 2 + 2
    model[0].requires_grad_(False)
    assert count_parameters(model) == 4 * 2 + 2


def test_device_is_that_of_the_parameters():
    assert device_of(nn.Linear(2, 2)) == torch.device("cpu")
    assert device_of(nn.Linear(2, 2).to("meta")) == torch.device("meta")


def test_median_is_over_the_timed_calls_after_one_warm_up(monkeypatch):
    # A fake clock: each call to fn lasts what the list says; the first (warm-up) call is not timed.
    durations = iter([100.0, 3.0, 1.0, 2.0, 50.0, 4.0])
    now = [0.0]

    def fn() -> None:
        now[0] += next(durations)

    monkeypatch.setattr(runs.time, "perf_counter", lambda: now[0])
    assert median_seconds(fn, "cpu", repeats=5) == pytest.approx(3.0)
    with pytest.raises(StopIteration):
        fn()  # all six durations were used: one warm-up and five timed calls
