"""A k-space time-stepping solver of the 2D wave equation: the independent reference for the operator.

It advances the whole periodic pressure field step by step, as time-domain solvers (k-Wave, j-Wave) do, with
the k-space corrected update ``pⁿ⁺¹ = 2pⁿ − pⁿ⁻¹ + F⁻¹[(2 cos(c|k|Δt) − 2) F pⁿ]`` on the spatial field
(one forward and one inverse FFT a step; exact for a homogeneous medium, so no numerical dispersion) and records the field at the elements by spectral interpolation. Used by tests and by
``benchmarks/physics.py``; it supports ideal (unfiltered) sensors of any width, no band-limit.
"""

from __future__ import annotations

import numpy as np
import torch

from pa_recon.errors import PAReconError
from pa_recon.physics.geometry import Grid, LinearArray
from pa_recon.physics.operator import DEFAULT_MARGIN_PX, padded_size


class KSpaceTimeStepper:
    """Time-domain solver on the operator's padded periodic domain; ``simulate(p0)`` has the operator's shapes.

    Sampling times must be uniform from t = 0 (``t0`` a multiple of ``1/fs``): the time step is ``1/fs``.
    """

    def __init__(self, grid: Grid, array: LinearArray, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None, margin_px: int = DEFAULT_MARGIN_PX) -> None:
        if array.center_frequency is not None:
            raise PAReconError("the time stepper models ideal sensors only", field="array.center_frequency")
        first = array.t0 * array.fs
        if abs(first - round(first)) > 1e-9:
            raise PAReconError("t0 must be a whole number of sampling periods", field="array.t0")
        self.grid, self.array, self.first_step = grid, array, int(round(first))
        self.mz, self.mx = padded_size(grid, array, margin_px)
        kz = 2 * np.pi * np.fft.fftfreq(self.mz, grid.dx)
        kx = 2 * np.pi * np.fft.rfftfreq(self.mx, grid.dx)
        c_dt = array.sound_speed / array.fs
        update = 2 * np.cos(c_dt * np.hypot(kz[:, None], kx[None, :])) - 2
        # Row z_array of the field: sum over kz; pixel row 0 is at z = dx/2.
        row = np.exp(1j * kz * (array.z_array - grid.dx / 2)) / self.mz
        weight = np.where(np.arange(kx.size) == 0, 1.0, 2.0) * np.sinc(kx * array.element_width / (2 * np.pi))
        lateral = weight[:, None] * np.exp(1j * np.outer(kx, array.positions() - grid.x()[0])) / self.mx
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.dtype = dtype
        self.update = torch.as_tensor(update, dtype=dtype, device=device)
        self.row = torch.as_tensor(row, dtype=complex_dtype, device=device)
        self.lateral = torch.as_tensor(lateral, dtype=complex_dtype, device=device)

    def _record(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Pressure at the elements, ``(B, n_el)``, from the field's half spectrum ``(B, Mz, Kx)``."""
        return torch.real((self.row @ spectrum) @ self.lateral)

    def simulate(self, p0: torch.Tensor) -> torch.Tensor:
        """Data ``(B, n_el, n_samples)`` for initial pressure ``(B, 1, nz, nx)``."""
        b = p0.shape[0]
        current = torch.zeros(b, self.mz, self.mx, dtype=self.dtype, device=p0.device)
        current[:, : self.grid.nz, : self.grid.nx] = p0[:, 0].to(self.dtype)
        spectrum = torch.fft.rfft2(current)
        # p(−Δt) = p(Δt) because ∂p/∂t = 0 at t = 0.
        previous = current + torch.fft.irfft2(self.update * spectrum, s=(self.mz, self.mx)) / 2
        out = torch.empty(b, self.array.n_elements, self.array.n_samples, dtype=self.dtype, device=p0.device)
        for n in range(self.first_step + self.array.n_samples):
            if n >= self.first_step:
                out[:, :, n - self.first_step] = self._record(spectrum)
            change = torch.fft.irfft2(self.update * spectrum, s=(self.mz, self.mx))
            current, previous = 2 * current - previous + change, current
            spectrum = torch.fft.rfft2(current)
        return out
