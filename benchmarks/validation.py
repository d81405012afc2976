"""Validation scans for the setting sweeps: phantoms of a family drawn with a seed kept apart from the test
sets', simulated like the pipeline's test sets (``phantoms.refine``× finer grid, every SNR of ``simulate.snr_db``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pa_recon.cli.common import family_phantoms, geometry_from_params, load_params
from pa_recon.data.phantoms import downsample
from pa_recon.physics import MeasurementSimulator, PATOperator
from pa_recon.recon import operator_norm


@dataclass(frozen=True)
class ValidationScans:
    """``truth`` ``(n, nz, nx)`` on the reconstruction grid; per SNR (dB) the data ``(n, n_el, n_samples)`` and
    noise std ``(n,)``; the operator ``op`` of the params file's geometry and its norm."""

    op: PATOperator
    op_norm: float
    truth: np.ndarray
    data: dict[float, tuple[torch.Tensor, torch.Tensor]]


def family_of(params: str, test_set: str | None) -> Mapping[str, Any]:
    """The phantom family of ``test_sets.<test_set>`` in ``params``, or the priors' training family
    (``priors.data``) without a name."""
    if test_set is None:
        return load_params(params, "priors")["data"]
    return load_params(params, "test_sets")[test_set]


def add_arguments(parser: argparse.ArgumentParser, n: int) -> None:
    """The options that pick the validation scans: ``--params``, ``--n`` (default ``n``), ``--seed``, ``--test-set``."""
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--n", type=int, default=n, help="validation phantoms (each simulated at every SNR)")
    parser.add_argument("--seed", type=int, default=777, help="phantom seed; keep it apart from the test sets'")
    parser.add_argument("--test-set", help="draw the phantoms from this test set's family (default: the priors')")


def scans_from(args: argparse.Namespace) -> ValidationScans:
    """The validation scans the options of :func:`add_arguments` pick."""
    return validation_scans(args.params, family_of(args.params, args.test_set), args.n, args.seed)


def validation_scans(params: str, family: Mapping[str, Any], n: int, seed: int) -> ValidationScans:
    """``n`` phantoms of ``family`` drawn with ``seed``, simulated at every SNR of the params file."""
    grid, array = geometry_from_params(params)
    fine, phantoms = family_phantoms(params, family, n, seed)
    refine = fine.nx // grid.nx
    simulator = MeasurementSimulator(grid, array, refine=refine)
    generator = torch.Generator().manual_seed(seed)
    data = {float(snr): simulator.simulate(torch.as_tensor(phantoms[:, None]), float(snr), generator)
            for snr in load_params(params, "simulate")["snr_db"]}
    op = PATOperator(grid, array)
    return ValidationScans(op, operator_norm(op), downsample(phantoms, refine), data)
