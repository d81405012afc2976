"""Prior files and the geometry check that guards their use.

A prior file is a :func:`pa_recon.train.save_checkpoint` dict: ``format`` (``"pa_recon.prior"``), ``version``,
``settings`` (:meth:`FlowPrior.settings`: kind, flow config, pre-transform alpha, grid, array, condition
normalisation) and ``model`` (the weights, on the CPU). It is written atomically and read with
``weights_only=True``.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np
import torch

from pa_recon.errors import PAReconError
from pa_recon.physics.geometry import Grid, LinearArray
from pa_recon.physics.operator import check_device
from pa_recon.priors.prior import FlowPrior
from pa_recon.train import load_checkpoint, save_checkpoint

FORMAT = "pa_recon.prior"
VERSION = 1

#: Relative tolerance for geometry values (a file round trip or a unit conversion must not count as a change).
GEOMETRY_RTOL = 1e-6

MISMATCH_FLAG = "--allow-geometry-mismatch"


def save_prior(path: str | os.PathLike[str], prior: FlowPrior) -> None:
    """Write ``prior`` (settings and current weights) to ``path`` atomically."""
    state = {k: v.detach().cpu() for k, v in prior.state_dict().items()}
    save_checkpoint(path, {"format": FORMAT, "version": VERSION, "settings": prior.settings(), "model": state})


def load_prior(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> FlowPrior:
    """The prior saved at ``path``, in eval mode with its weights frozen (``requires_grad`` off).

    Raises :class:`PAReconError` naming the file when it is missing, unreadable, not a prior (e.g. a trainer's
    ``last.pt``) or inconsistent with the settings it holds.
    """
    check_device(map_location, field="map_location")
    state = load_checkpoint(path, map_location)
    if state.get("format") != FORMAT:
        hint = " (a training checkpoint: use the prior.pt written next to it)" if "optimizer" in state else ""
        raise PAReconError(f"not a prior file{hint}", file=path, field="format")
    if state.get("version") != VERSION:
        raise PAReconError(f"prior file version {state.get('version')!r}; this code reads version {VERSION}",
                           file=path, field="version")
    try:
        prior = FlowPrior.from_settings(state["settings"])
        prior.load_state_dict(state["model"])
    except PAReconError as err:
        raise PAReconError(err.message, file=path, field=f"settings.{err.field}" if err.field else "settings") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise PAReconError(f"inconsistent prior file ({type(err).__name__}: {err})", file=path) from None
    prior.source = str(path)
    prior.requires_grad_(False)
    return prior.to(map_location).eval()


def geometry_differences(prior: FlowPrior, grid: Grid, array: LinearArray | None) -> tuple[list[str], list[str]]:
    """``(fatal, tolerable)`` descriptions of how ``grid``/``array`` differ from the prior's.

    Fatal: another image size (the prior's latents have fixed shapes). Tolerable: another pixel size, and for a
    conditional prior another array (the prior still runs, but on images unlike its training data).
    """
    fatal, tolerable = [], []
    if (grid.nz, grid.nx) != (prior.grid.nz, prior.grid.nx):
        fatal.append(f"grid size {grid.nz}×{grid.nx} (prior: {prior.grid.nz}×{prior.grid.nx})")
    if not math.isclose(grid.dx, prior.grid.dx, rel_tol=GEOMETRY_RTOL):
        tolerable.append(f"grid.dx {grid.dx:g} m (prior: {prior.grid.dx:g} m)")
    if prior.array is not None:
        if array is None:
            tolerable.append("no array given (the prior was trained on data of one)")
        else:
            tolerable += _array_differences(prior.array, array)
    return fatal, tolerable


def check_geometry(prior: FlowPrior, grid: Grid, array: LinearArray | None, *, allow_mismatch: bool = False) -> None:
    """Raise :class:`PAReconError` if the data's ``grid``/``array`` differ from those the prior was trained for.

    A marginal prior depends on the grid only. With ``allow_mismatch`` a different pixel size or array only
    warns; a different image size is always an error.
    """
    fatal, tolerable = geometry_differences(prior, grid, array)
    if fatal or (tolerable and not allow_mismatch):
        remedy = ("retrain the prior for this grid" if fatal
                  else f"retrain the prior or pass {MISMATCH_FLAG} (allow_mismatch=True in Python)")
        raise PAReconError(f"the prior was trained for another geometry: {'; '.join(fatal + tolerable)}; {remedy}",
                           file=prior.source, field="geometry")
    if tolerable:
        warnings.warn(f"using a prior trained for another geometry: {'; '.join(tolerable)}", stacklevel=2)


def _array_differences(trained: LinearArray, given: LinearArray) -> list[str]:
    a, b = trained.to_dict(), given.to_dict()
    out = []
    for key in a:
        va, vb = np.asarray(a[key], dtype=np.float64), np.asarray(b[key], dtype=np.float64)
        if va.shape != vb.shape:
            out.append(f"array.{key}: {vb.size} values (prior: {va.size})")
        elif not np.allclose(va, vb, rtol=0.0, atol=GEOMETRY_RTOL * max(float(np.abs(va).max(initial=0.0)), 1e-30)):
            out.append(f"array.{key} {_show(vb)} (prior: {_show(va)})")
    return out


def _show(v: np.ndarray) -> Any:
    return f"{float(v):g}" if v.ndim == 0 else f"[{v.min():g} .. {v.max():g}]"
