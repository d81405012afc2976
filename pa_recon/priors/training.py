"""Training data and maximum-likelihood training of the priors with the shared trainer.

Data. Phantoms (procedural vessels by default, or crops of a DRIVE-style vessel-mask folder) are generated on
the grid refined ``refine`` times; the ground truth is their area-average down to the reconstruction grid, and
the data are simulated from the fine phantoms by :class:`~pa_recon.physics.MeasurementSimulator` (finer grid,
sensor band limit and element width, white noise), so training never commits the inverse crime. Each pair
gets its own SNR, uniform in ``snr_db_range``, so one conditional prior serves that range of noise levels.

Loss. The mean bits per pixel ``nll / (nz nx log 2)`` of the ground truth plus dequantization noise
``N(0, dequant_sigma²)`` drawn afresh for every batch (default ``1/256``, one 8-bit level): the phantoms have
large areas of exactly 0, on which a flow would otherwise collapse to a spike of unbounded density. At 4σ the
noise stays inside the soft logit's identity range (``±0.028`` beyond ``[0, 1]`` for ``alpha = 0.05``). The
noise sets how sharp the learned density is around the background value 0, and so how stiff ``nll`` is there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from pa_recon.checks import check_count, check_number
from pa_recon.data.families import make_phantoms
from pa_recon.data.phantoms import VesselParams, downsample
from pa_recon.errors import PAReconError
from pa_recon.physics.geometry import Grid, LinearArray
from pa_recon.physics.operator import PATOperator
from pa_recon.physics.simulate import MeasurementSimulator
from pa_recon.priors.checkpoint import load_prior, save_prior
from pa_recon.priors.prior import FlowPrior, flow_config_for
from pa_recon.train import (
    LossFn,
    TrainConfig,
    Trainer,
    inference_state_dict,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)
from pa_recon.train.runs import fit_recorded, open_run
from pa_recon.train.tracking import start_tracker

DEQUANT_SIGMA = 1.0 / 256
PRIOR_FILE = "prior.pt"
TRAINING_SET_FILE = "training_set.pt"
"""Kept beside an unfinished training by :func:`cached_training_set` and removed when :func:`train_prior` ends."""
#: Sample grids of a conditional prior: rows of truth, condition, then this many samples (and as many rows as
#: columns, since the trainer's grid is square).
SAMPLES_PER_CONDITION = 3


def make_training_images(n: int, grid: Grid, *, source: str = "procedural",
                         vessel_params: VesselParams | Mapping[str, Any] | None = None,
                         mask_dir: str | os.PathLike[str] | None = None, split: str = "train", refine: int = 2,
                         seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` phantoms on ``grid.refined(refine)`` ``(n, 1, nz·r, nx·r)`` and their area-averages on ``grid``
    ``(n, 1, nz, nx)``, float32 in ``[0, 1]``; returned as ``(coarse, fine)``.

    ``source``, ``vessel_params``, ``mask_dir`` and ``split`` select the family as in
    :func:`pa_recon.data.make_phantoms`; image ``i`` depends only on ``(seed, i)``.
    """
    refine = check_count(refine, "refine", minimum=1)
    fine_grid = grid.refined(refine)
    vessels = dataclasses.asdict(vessel_params) if isinstance(vessel_params, VesselParams) else vessel_params
    fine = make_phantoms(n, fine_grid.nz, fine_grid.nx, seed, source=source, vessels=vessels, mask_dir=mask_dir,
                         split=split)
    return torch.from_numpy(downsample(fine, refine)).unsqueeze(1), torch.from_numpy(fine).unsqueeze(1)


def make_training_pairs(n: int, grid: Grid, array: LinearArray, *, source: str = "procedural",
                        vessel_params: VesselParams | Mapping[str, Any] | None = None,
                        mask_dir: str | os.PathLike[str] | None = None, split: str = "train", refine: int = 2,
                        snr_db_range: tuple[float, float] = (20.0, 45.0), seed: int = 0, batch_size: int = 32,
                        device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """``n`` pairs of ground truth ``x`` ``(n, 1, nz, nx)`` in ``[0, 1]`` and noisy data ``y``
    ``(n, n_el, n_samples)``, float32 on the CPU.

    Phantoms as in :func:`make_training_images`; data simulated on the ``refine``-times finer grid in batches of
    ``batch_size`` on ``device``, each pair at an SNR (dB, on the clean data's RMS) drawn uniformly from
    ``snr_db_range``. The same arguments give the same pairs.
    """
    lo, hi = check_snr_range(snr_db_range)
    batch_size = check_count(batch_size, "batch_size", minimum=1)
    x, fine = make_training_images(n, grid, source=source, vessel_params=vessel_params, mask_dir=mask_dir,
                                   split=split, refine=refine, seed=seed)
    simulator = MeasurementSimulator(grid, array, refine=refine, device=device)
    snr = torch.from_numpy(np.random.default_rng([seed, 1]).uniform(lo, hi, n)).float()
    noise = torch.Generator(device=simulator.operator.kernel.device).manual_seed(seed)
    y = torch.empty((n, array.n_elements, array.n_samples))
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        p0 = fine[start:stop].to(simulator.operator.kernel.device)
        y[start:stop] = simulator.simulate(p0, snr[start:stop].to(p0.device), noise)[0].cpu()
    return x, y


def check_snr_range(snr_db_range: Iterable[float]) -> tuple[float, float]:
    """``snr_db_range`` as a pair ``(lo, hi)`` of finite numbers with ``lo <= hi``; else a :class:`PAReconError`
    naming ``snr_db_range``."""
    pair = list(snr_db_range) if isinstance(snr_db_range, Iterable) and not isinstance(snr_db_range, str) else []
    try:
        values = [check_number(v, "snr_db_range") for v in pair]
    except PAReconError:
        values = []  # the message names the whole pair
    if not (len(values) == 2 and values[0] <= values[1]):
        raise PAReconError(f"must be an increasing pair of finite numbers, got {snr_db_range!r}", field="snr_db_range")
    return values[0], values[1]


def validation_size(n: int, batch_size: int, val_fraction: float = 0.1) -> int:
    """How many of ``n`` training items :func:`train_prior` holds out for validation (the last ``val_fraction`` of
    them, rounded); a :class:`PAReconError` naming ``n`` when the others do not fill one batch of ``batch_size``."""
    val_fraction = check_number(val_fraction, "val_fraction", minimum=0, below=1)
    n_val = int(round(val_fraction * n))
    if n - n_val < batch_size:
        raise PAReconError(f"{n} items leave {n - n_val} for training after {n_val} for validation, fewer than one "
                           f"batch of {batch_size}", field="n")
    return n_val


def cached_training_set(out_dir: str | os.PathLike[str], description: Mapping[str, Any],
                        make: Callable[[], tuple[Tensor, Tensor | None]]) -> tuple[Tensor, Tensor | None]:
    """Training data ``(x, y)`` for :func:`train_prior` into ``out_dir``: those an interrupted run there kept, when
    they were made as ``description`` (plain data) says, else ``make()``'s, kept until the training ends.

    A resumed training then skips making its data again (minutes for the GPU profile's 20,000 pairs) and trains on
    the very same tensors, also when it resumes on another device.
    """
    path = Path(out_dir) / TRAINING_SET_FILE
    wanted = json.loads(json.dumps(description))
    if path.is_file():
        kept = load_checkpoint(path)
        if kept.get("description") == wanted:
            return kept["x"], kept["y"]
    x, y = make()
    save_checkpoint(path, {"description": wanted, "x": x, "y": y})
    return x, y


def train_prior(kind: str, flow_config: Mapping[str, Any], train_config: Mapping[str, Any], x: Tensor,
                y: Tensor | None = None, *, grid: Grid, array: LinearArray | None = None,
                val: tuple[Tensor, Tensor | None] | None = None, val_fraction: float = 0.1,
                out_dir: str | os.PathLike[str], alpha: float = 0.05, dequant_sigma: float = DEQUANT_SIGMA,
                extra_params: Mapping[str, Any] | None = None) -> FlowPrior:
    """Train a ``kind`` ("marginal" or "conditional") prior by maximum likelihood; returns it as saved.

    ``x`` ``(n, 1, nz, nx)``: ground truths on ``grid``; ``y`` ``(n, n_el, n_samples)``: their data (needed, with
    ``array``, for a conditional prior). Validation: ``val = (x_val, y_val)``, else the last ``val_fraction`` of
    the pairs. ``flow_config``: flow settings (:func:`flow_config_for`); ``train_config``: :class:`TrainConfig`
    fields, with ``out_dir`` replaced by ``out_dir`` (the MLflow ``run_name`` is ``kind`` unless given).
    ``alpha``: the soft logit's margin; ``dequant_sigma``: std of the training noise (module docstring).
    ``extra_params`` are logged to MLflow with the prior's settings.

    Writes the trainer's files (``last.pt``, ``best.pt``, ``samples/``), the run record ``run.json`` (settings,
    training time, hardware: :mod:`pa_recon.train.runs`) and ``prior.pt`` (the final weights, EMA where kept) into
    ``out_dir``, and removes the data :func:`cached_training_set` kept there; ``prior.pt`` is also logged to the
    MLflow run. An interrupted run in ``out_dir`` with the same settings (the prior's, the training options that
    shape the result, the data shapes and ``extra_params``) continues from its ``last.pt``; a finished run or one
    made otherwise is cleared and trained afresh, as a re-run pipeline stage expects. The data are not compared bit
    by bit (simulated on another device they may differ in the last bits), so ``extra_params`` should describe how
    they were made.
    """
    config = TrainConfig.from_dict({"run_name": kind, **dict(train_config), "out_dir": str(out_dir)})
    conditional = kind == "conditional"
    if conditional and (y is None or array is None):
        raise PAReconError("a conditional prior is trained on (x, y) pairs of a known array", field="y")
    dequant_sigma = check_number(dequant_sigma, "dequant_sigma", minimum=0)
    n_val = 0 if val is not None else validation_size(x.shape[0], config.batch_size, val_fraction)
    seed_everything(config.seed)
    prior = FlowPrior(flow_config_for(kind, flow_config, grid), grid, array if conditional else None, alpha=alpha)
    train_items = _items(prior, x, y)
    val_items: tuple[Tensor, ...] | None
    if val is not None:
        val_items = _items(prior, *val)
    else:
        val_items = tuple(t[x.shape[0] - n_val:] for t in train_items) if n_val else None
        train_items = tuple(t[:x.shape[0] - n_val] for t in train_items)
    shown = val_items or train_items
    prior_settings = prior.settings()
    record = open_run(config, {"prior": prior_settings, "dequant_sigma": dequant_sigma,
                               "shapes": [list(t.shape) for t in (*train_items, *(val_items or ()))],
                               "extra": dict(extra_params or {})}, resume_finished=False)
    path = Path(out_dir) / PRIOR_FILE
    path.unlink(missing_ok=True)  # a killed run must not leave an older prior behind
    fit_recorded(config, record, _loss_fn(dequant_sigma), lambda loss: Trainer(
        prior, config, loss, _unpack(train_items), None if val_items is None else _unpack(val_items),
        sample_fn=lambda model: _sample_grid(model, shown),
        extra_params={"prior": {**_loggable(prior_settings), "dequant_sigma": dequant_sigma,
                                "n_train": int(train_items[0].shape[0])},
                      **dict(extra_params or {})}))
    final = load_checkpoint(path.with_name("last.pt"))
    prior.load_state_dict(inference_state_dict(final))
    save_prior(path, prior)
    if config.tracking and final["run_id"] is not None:
        tracker = start_tracker(True, config.tracking_uri, config.experiment, config.run_name, final["run_id"])
        tracker.log_artifact(path, "prior")
        tracker.close("FINISHED")
    path.with_name(TRAINING_SET_FILE).unlink(missing_ok=True)
    return load_prior(path)


def _items(prior: FlowPrior, x: Tensor, y: Tensor | None) -> tuple[Tensor, ...]:
    """``(x,)`` for a marginal prior, ``(x, c)`` with the normalised adjoint images ``c`` for a conditional one."""
    if x.ndim != 4 or tuple(x.shape[1:]) != prior.image_shape:
        raise PAReconError(f"expected images (n, {', '.join(map(str, prior.image_shape))}), got {tuple(x.shape)}",
                           field="x")
    x = x.float()
    if not prior.conditional:
        return (x,)
    assert prior.array is not None and y is not None
    if y.shape[0] != x.shape[0]:
        raise PAReconError(f"{x.shape[0]} images but {y.shape[0]} scans", field="y")
    op = PATOperator(prior.grid, prior.array)
    with torch.no_grad():
        cond = torch.cat([cast(Tensor, prior.condition(op, part.float())) for part in y.split(64)])
    return (x, cond)


def _unpack(items: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    """The trainer's data form: a tensor for one item kind, a tuple for pairs."""
    return items[0] if len(items) == 1 else items


def _loss_fn(dequant_sigma: float) -> LossFn:
    """Mean bits per pixel of the dequantized truths (conditioned on ``c`` when the batch is ``(x, c)``)."""

    def loss(model: nn.Module, batch: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x, cond = (batch, None) if isinstance(batch, Tensor) else batch
        noisy = x + dequant_sigma * torch.randn_like(x)
        bpd = model(noisy, cond) / (x[0].numel() * math.log(2.0))
        return bpd.mean(), {}

    return loss


def _sample_grid(model: nn.Module, items: tuple[Tensor, ...]) -> Tensor:
    """Images for the trainer's square sample PNG of ``k = 2 + SAMPLES_PER_CONDITION`` columns.

    Marginal: ``k²`` samples. Conditional: for each of ``k`` held-out pairs a row of truth, condition (shown as
    ``(c + 1) / 2``) and :data:`SAMPLES_PER_CONDITION` samples.
    """
    assert isinstance(model, FlowPrior)
    k = 2 + SAMPLES_PER_CONDITION
    if not model.conditional:
        return model.sample(k * k)
    ref = next(model.parameters())
    index = torch.arange(k) % items[0].shape[0]
    x, cond = (t[index].to(ref.device, ref.dtype) for t in items)
    samples = model.sample(k * SAMPLES_PER_CONDITION, cond.repeat_interleave(SAMPLES_PER_CONDITION, 0))
    samples = samples.view(k, SAMPLES_PER_CONDITION, *x.shape[1:])
    return torch.cat([x[:, None], (cond[:, None] + 1) / 2, samples], dim=1).flatten(0, 1)


def _loggable(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The prior's settings for MLflow params: the array summarised (its element positions are too long)."""
    out = dict(settings)
    if out.get("array") is not None:
        array = dict(out["array"])
        positions = np.asarray(array.pop("element_x"))
        out["array"] = {**array, "n_elements": positions.size, "pitch": float(np.diff(positions).mean())
                        if positions.size > 1 else 0.0}
    return out
