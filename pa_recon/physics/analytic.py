"""Semi-analytic solution for a Gaussian initial pressure: the accuracy reference for the solvers."""

from __future__ import annotations

import numpy as np
from scipy.special import j0, roots_legendre

from pa_recon.physics.geometry import Grid, LinearArray


def gaussian_source(grid: Grid, xc: float, zc: float, sigma: float) -> np.ndarray:
    """``exp(−|r − r_c|² / 2σ²)`` sampled at the pixel centres, ``(nz, nx)``; positions and σ in metres."""
    x, z = np.meshgrid(grid.x(), grid.z())
    return np.exp(-((x - xc) ** 2 + (z - zc) ** 2) / (2 * sigma**2))


def gaussian_pressure(array: LinearArray, xc: float, zc: float, sigma: float, n_nodes: int = 6000) -> np.ndarray:
    """Pressure at ideal point elements, ``(n_elements, n_samples)``, for a unit Gaussian source at ``(xc, zc)``.

    ``p(r, t) = ∫₀^∞ σ² exp(−σ²k²/2) cos(ckt) J0(kr) k dk`` (the 2D Hankel-transform solution), integrated
    by Gauss–Legendre quadrature on ``[0, 12/σ]``, beyond which the integrand is below ``e⁻⁷²``.
    """
    r = np.hypot(array.positions() - xc, array.z_array - zc)
    nodes, weights = roots_legendre(n_nodes)
    k_max = 12 / sigma
    k = (nodes + 1) * k_max / 2
    w = weights * k_max / 2 * sigma**2 * np.exp(-((sigma * k) ** 2) / 2) * k
    return (j0(np.outer(r, k)) * w) @ np.cos(np.outer(k, array.sound_speed * array.times()))
