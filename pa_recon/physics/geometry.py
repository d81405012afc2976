"""Imaging geometry: the pixel grid and the linear ultrasound array.

Conventions (the only place they are written down):

* SI units throughout: metres, seconds, Hz, m/s.
* Images are tensors ``(batch, channel, nz, nx)``. Axis ``x`` is lateral (along the array), axis ``z`` is
  depth (into the tissue). Row 0 is the row nearest the array.
* Pixel centres: ``x_j = (j - (nx - 1) / 2) * dx`` (the grid is centred laterally on x = 0) and
  ``z_i = (i + 1/2) * dx`` (the tissue starts at z = 0, the top edge of row 0).
* The array lies on the line ``z = z_array`` (default 0: on the tissue boundary, the top edge of the image).
  Element ``e`` is centred at ``x = element_x[e]``; it integrates pressure over ``[x - w/2, x + w/2]``.
* Time samples are ``t_n = t0 + n / fs`` for ``n = 0 .. n_samples - 1``; the initial pressure is at t = 0.
* Data are ``(batch, n_elements, n_samples)`` tensors of pressure in the units of the initial pressure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pa_recon.errors import PAReconError


@dataclass(frozen=True)
class Grid:
    """A square-pixel image grid of ``nz`` rows (depth) by ``nx`` columns (lateral), pixel size ``dx`` metres."""

    nx: int
    nz: int
    dx: float

    def __post_init__(self) -> None:
        if self.nx < 1 or self.nz < 1:
            raise PAReconError(f"grid must have at least one pixel, got nz={self.nz}, nx={self.nx}", field="grid")
        if not self.dx > 0:
            raise PAReconError(f"pixel size dx must be positive, got {self.dx}", field="grid.dx")

    def x(self) -> np.ndarray:
        """Lateral pixel-centre coordinates, shape ``(nx,)``, metres."""
        return (np.arange(self.nx) - (self.nx - 1) / 2) * self.dx

    def z(self) -> np.ndarray:
        """Depth pixel-centre coordinates, shape ``(nz,)``, metres."""
        return (np.arange(self.nz) + 0.5) * self.dx

    def refined(self, factor: int) -> Grid:
        """The grid with each pixel split into ``factor × factor`` pixels over the same field of view."""
        if factor < 1:
            raise PAReconError(f"refinement factor must be >= 1, got {factor}", field="factor")
        return Grid(nx=self.nx * factor, nz=self.nz * factor, dx=self.dx / factor)

    def to_dict(self) -> dict[str, Any]:
        """Plain attributes (for HDF5 and params files)."""
        return {"nx": self.nx, "nz": self.nz, "dx": self.dx}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        """Inverse of :meth:`to_dict`."""
        return cls(nx=int(d["nx"]), nz=int(d["nz"]), dx=float(d["dx"]))


@dataclass(frozen=True)
class LinearArray:
    """A linear array of line elements on ``z = z_array``, sampled at ``fs`` Hz.

    ``center_frequency`` (Hz) and ``fractional_bandwidth`` (full width at half maximum of the power
    spectrum over the centre frequency) describe a zero-phase Gaussian band-pass electrical response;
    ``center_frequency=None`` means an ideal, infinitely broadband sensor. ``element_width`` is in metres
    (0: point-like elements).
    """

    element_x: tuple[float, ...]
    fs: float
    n_samples: int
    sound_speed: float = 1500.0
    t0: float = 0.0
    z_array: float = 0.0
    element_width: float = 0.0
    center_frequency: float | None = None
    fractional_bandwidth: float = 0.8
    _positions: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pos = np.asarray(self.element_x, dtype=np.float64).reshape(-1)
        object.__setattr__(self, "element_x", tuple(float(v) for v in pos))
        object.__setattr__(self, "_positions", pos)
        checks = [
            (pos.size >= 1, "the array needs at least one element", "element_x"),
            (np.all(np.isfinite(pos)), "element positions must be finite", "element_x"),
            (self.fs > 0, f"sampling rate must be positive, got {self.fs}", "fs"),
            (self.n_samples >= 1, f"n_samples must be >= 1, got {self.n_samples}", "n_samples"),
            (self.sound_speed > 0, f"speed of sound must be positive, got {self.sound_speed}", "sound_speed"),
            (self.t0 >= 0, f"t0 must be >= 0, got {self.t0}", "t0"),
            (self.element_width >= 0, f"element width must be >= 0, got {self.element_width}", "element_width"),
            (self.fractional_bandwidth > 0, "fractional bandwidth must be positive", "fractional_bandwidth"),
            (self.center_frequency is None or self.center_frequency > 0, "centre frequency must be positive",
             "center_frequency"),
        ]
        for ok, message, name in checks:
            if not ok:
                raise PAReconError(message, field=f"array.{name}")

    @classmethod
    def uniform(cls, n_elements: int, pitch: float, **kwargs: Any) -> LinearArray:
        """``n_elements`` elements at ``pitch`` metres, centred on x = 0 (so they sit on pixel centres when
        ``pitch`` equals the grid's ``dx`` and the counts match)."""
        x = (np.arange(n_elements) - (n_elements - 1) / 2) * pitch
        return cls(element_x=tuple(x), **kwargs)

    @property
    def n_elements(self) -> int:
        """Number of elements."""
        return len(self.element_x)

    def positions(self) -> np.ndarray:
        """Element centre x-positions, shape ``(n_elements,)``, metres."""
        return self._positions.copy()

    def times(self) -> np.ndarray:
        """Sample times, shape ``(n_samples,)``, seconds."""
        return self.t0 + np.arange(self.n_samples) / self.fs

    def frequency_response(self, f: np.ndarray) -> np.ndarray:
        """Real, zero-phase electrical response at frequencies ``f`` (Hz, any shape); 1 for an ideal sensor."""
        f = np.abs(np.asarray(f, dtype=np.float64))
        if self.center_frequency is None:
            return np.ones_like(f)
        # FWHM of the power spectrum |H|^2 equals fractional_bandwidth * centre frequency.
        sigma = self.fractional_bandwidth * self.center_frequency / (2 * np.sqrt(np.log(2)))
        return np.exp(-0.5 * ((f - self.center_frequency) / sigma) ** 2)

    def to_dict(self) -> dict[str, Any]:
        """Plain attributes (for HDF5 and params files); ``center_frequency`` 0 stands for an ideal sensor."""
        return {
            "element_x": np.asarray(self.element_x),
            "fs": self.fs,
            "n_samples": self.n_samples,
            "sound_speed": self.sound_speed,
            "t0": self.t0,
            "z_array": self.z_array,
            "element_width": self.element_width,
            "center_frequency": 0.0 if self.center_frequency is None else self.center_frequency,
            "fractional_bandwidth": self.fractional_bandwidth,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinearArray:
        """Inverse of :meth:`to_dict`."""
        fc = float(d.get("center_frequency", 0.0) or 0.0)
        return cls(
            element_x=tuple(np.asarray(d["element_x"], dtype=np.float64).reshape(-1)),
            fs=float(d["fs"]),
            n_samples=int(d["n_samples"]),
            sound_speed=float(d.get("sound_speed", 1500.0)),
            t0=float(d.get("t0", 0.0)),
            z_array=float(d.get("z_array", 0.0)),
            element_width=float(d.get("element_width", 0.0)),
            center_frequency=fc if fc > 0 else None,
            fractional_bandwidth=float(d.get("fractional_bandwidth", 0.8)),
        )
