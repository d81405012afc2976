"""One entry point for every phantom family: procedural vessels or crops of a vessel-mask folder."""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Any

import numpy as np

from pa_recon.data.phantoms import VesselParams, vessel_phantoms
from pa_recon.data.vessel_masks import VesselMaskFolder
from pa_recon.errors import PAReconError

SOURCES = ("procedural", "vessel_masks")


def make_phantoms(n: int, nz: int, nx: int, seed: int, *, source: str = "procedural",
                  vessels: Mapping[str, Any] | None = None, mask_dir: str | PathLike[str] | None = None,
                  split: str = "train") -> np.ndarray:
    """``n`` phantoms ``(n, nz, nx)`` float32 in [0, 1] of one family.

    ``source`` "procedural": :func:`vessel_phantoms` with :func:`family_vessels`; "vessel_masks": random
    crops of the ``split`` ("train", "val" or "all") of the DRIVE-style folder ``mask_dir``.
    """
    params = family_vessels(source, vessels)
    if source == "procedural":
        return vessel_phantoms(n, nz, nx, seed, params)
    if mask_dir is None:
        raise PAReconError("a vessel-mask folder is needed for source 'vessel_masks'", field="mask_dir")
    return VesselMaskFolder(mask_dir, split=split).crops(n, nz, nx, seed)


def family_vessels(source: str, vessels: Mapping[str, Any] | None) -> VesselParams:
    """The :class:`VesselParams` of a family's ``vessels`` settings (:meth:`VesselParams.from_dict`), checked with
    its ``source`` (one of :data:`SOURCES`) for every source, so a typo is named before any phantom is made; an
    error names ``source``, ``vessels`` or ``vessels.<key>``."""
    if source not in SOURCES:
        raise PAReconError(f"unknown phantom source {source!r}; choose one of {SOURCES}", field="source")
    try:
        return VesselParams.from_dict({} if vessels is None else vessels)
    except PAReconError as err:
        raise err.under("vessels") from None
