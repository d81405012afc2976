"""Data simulation that avoids the inverse crime: a finer grid, a band-limited finite-width sensor, noise.

The data are simulated from a phantom on a grid ``refine`` times finer than the reconstruction grid, with the
sensor's electrical response and element width, and Gaussian noise at a chosen SNR is added. Reconstructions
then use the coarse-grid operator, so model and data never share a discretisation.
"""

from __future__ import annotations

import torch

from pa_recon.errors import PAReconError
from pa_recon.physics.geometry import Grid, LinearArray
from pa_recon.physics.operator import PATOperator


def noise_sigma(clean: torch.Tensor, snr_db: torch.Tensor | float) -> torch.Tensor:
    """Per-scan noise standard deviation for ``clean (B, n_el, n_samples)`` at ``snr_db`` (scalar or ``(B,)``).

    SNR is defined on the clean data: ``20·log10(rms(clean) / sigma)``.
    """
    rms = clean.pow(2).mean(dim=(1, 2)).sqrt()
    snr = torch.as_tensor(snr_db, dtype=clean.dtype, device=clean.device)
    return rms / 10 ** (snr / 20)


def estimate_noise_sigma(y: torch.Tensor) -> torch.Tensor:
    """Per-scan white-noise standard deviation of measured data ``y (B, n_el, n_samples)``, ``(B,)``.

    Uses the median absolute deviation of second differences along time: a signal well sampled below the
    Nyquist rate contributes little to them, while white noise of variance σ² gives second differences of
    variance 6σ² (so MAD·1.4826/√6 estimates σ). Signal content near the Nyquist rate biases it upwards.
    """
    diffs = torch.diff(y, n=2, dim=2).reshape(y.shape[0], -1)
    mad = (diffs - diffs.median(dim=1, keepdim=True).values).abs().median(dim=1).values
    return mad * 1.4826 / 6**0.5


class MeasurementSimulator:
    """Simulates noisy data of ``grid``'s field of view on ``grid.refined(refine)``.

    ``simulate`` takes phantoms on the fine grid, ``(B, 1, nz·refine, nx·refine)``.
    """

    def __init__(
        self,
        grid: Grid,
        array: LinearArray,
        refine: int = 2,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if refine < 2:
            raise PAReconError(f"refine must be >= 2 to avoid the inverse crime, got {refine}", field="refine")
        self.grid = grid
        self.refine = refine
        self.fine_grid = grid.refined(refine)
        self.operator = PATOperator(self.fine_grid, array, dtype=dtype, device=device)

    def simulate(
        self, p0_fine: torch.Tensor, snr_db: torch.Tensor | float, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Noisy data ``(B, n_el, n_samples)`` and the per-scan noise sigma ``(B,)`` used."""
        with torch.no_grad():
            clean = self.operator(p0_fine)
            sigma = noise_sigma(clean, snr_db)
            noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=clean.device)
            return clean + sigma[:, None, None] * noise, sigma
