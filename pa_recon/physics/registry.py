"""Small example operators that the generic physics tests iterate over; register new operators here.

Each entry builds an operator of a few hundred pixels for a given dtype, covering one geometry feature.
"""

from __future__ import annotations

from typing import Callable

import torch

from pa_recon.physics.geometry import Grid, LinearArray
from pa_recon.physics.operator import PATOperator

_GRID = Grid(nx=16, nz=12, dx=1e-4)


def _array(**kwargs: object) -> LinearArray:
    settings: dict[str, object] = {"n_elements": 10, "pitch": 1.3e-4, "fs": 30e6, "n_samples": 48}
    settings.update(kwargs)
    return LinearArray.uniform(**settings)  # type: ignore[arg-type]


OPERATORS: dict[str, Callable[[torch.dtype], PATOperator]] = {
    "ideal-point": lambda dtype: PATOperator(_GRID, _array(), dtype=dtype),
    "wide-elements": lambda dtype: PATOperator(_GRID, _array(element_width=1e-4), dtype=dtype),
    "band-limited": lambda dtype: PATOperator(_GRID, _array(center_frequency=5e6, fractional_bandwidth=1.0,
                                                            element_width=8e-5), dtype=dtype),
    "offset-array-late-start": lambda dtype: PATOperator(_GRID, _array(z_array=-3e-4, t0=5 / 30e6), dtype=dtype),
}
