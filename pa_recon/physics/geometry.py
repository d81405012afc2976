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

from pa_recon.checks import check_count, check_number
from pa_recon.errors import PAReconError


@dataclass(frozen=True)
class Grid:
    """A square-pixel image grid of ``nz`` rows (depth) by ``nx`` columns (lateral), pixel size ``dx`` metres."""

    nx: int
    nz: int
    dx: float

    def __post_init__(self) -> None:
        # Sizes are integers (numpy integers are stored as ``int``); dx is a finite positive float.
        for name in ("nx", "nz"):
            object.__setattr__(self, name, check_count(getattr(self, name), f"grid.{name}", minimum=1))
        object.__setattr__(self, "dx", check_number(self.dx, "grid.dx", above=0))

    def x(self) -> np.ndarray:
        """Lateral pixel-centre coordinates, shape ``(nx,)``, metres."""
        return (np.arange(self.nx) - (self.nx - 1) / 2) * self.dx

    def z(self) -> np.ndarray:
        """Depth pixel-centre coordinates, shape ``(nz,)``, metres."""
        return (np.arange(self.nz) + 0.5) * self.dx

    def refined(self, factor: int) -> Grid:
        """The grid with each pixel split into ``factor × factor`` pixels over the same field of view."""
        factor = check_count(factor, "factor", minimum=1)
        return Grid(nx=self.nx * factor, nz=self.nz * factor, dx=self.dx / factor)

    def to_dict(self) -> dict[str, Any]:
        """Plain attributes (for HDF5 and params files)."""
        return {"nx": self.nx, "nz": self.nz, "dx": self.dx}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        """Inverse of :meth:`to_dict`. Values are checked as in the constructor (a size of 64.5 is refused,
        not truncated)."""
        return cls(nx=d["nx"], nz=d["nz"], dx=d["dx"])


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
        try:
            pos = np.asarray(self.element_x, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise PAReconError(f"element positions must be numbers, got {self.element_x!r}",
                               field="array.element_x") from None
        if pos.size < 1:
            raise PAReconError("the array needs at least one element", field="array.element_x")
        if not np.all(np.isfinite(pos)):
            raise PAReconError("element positions must be finite", field="array.element_x")
        object.__setattr__(self, "element_x", tuple(float(v) for v in pos))
        object.__setattr__(self, "_positions", pos)
        object.__setattr__(self, "n_samples", check_count(self.n_samples, "array.n_samples", minimum=1))
        # Every physical value must be a finite number; (name, lower bound inclusive, lower bound exclusive).
        numbers = [
            ("fs", None, 0.0),
            ("sound_speed", None, 0.0),
            ("t0", 0.0, None),
            ("z_array", None, None),
            ("element_width", 0.0, None),
            ("fractional_bandwidth", None, 0.0),
            ("center_frequency", None, 0.0),
        ]
        for name, minimum, above in numbers:
            value = getattr(self, name)
            if name == "center_frequency" and value is None:
                continue
            object.__setattr__(self, name, check_number(value, f"array.{name}", minimum=minimum, above=above))

    @classmethod
    def uniform(cls, n_elements: int, pitch: float, **kwargs: Any) -> LinearArray:
        """``n_elements`` elements at ``pitch`` metres, centred on x = 0 (so they sit on pixel centres when
        ``pitch`` equals the grid's ``dx`` and the counts match)."""
        n_elements = check_count(n_elements, "array.n_elements", minimum=1)
        pitch = check_number(pitch, "array.pitch", above=0)
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
        """Inverse of :meth:`to_dict`. Values are checked as in the constructor (a count of 20.5 is refused, not
        truncated); ``center_frequency`` 0 or None stands for an ideal sensor."""
        fc = d.get("center_frequency", 0.0)
        if fc is not None and check_number(fc, "array.center_frequency") == 0:
            fc = None
        return cls(
            element_x=d["element_x"],
            fs=d["fs"],
            n_samples=d["n_samples"],
            sound_speed=d.get("sound_speed", 1500.0),
            t0=d.get("t0", 0.0),
            z_array=d.get("z_array", 0.0),
            element_width=d.get("element_width", 0.0),
            center_frequency=fc,
            fractional_bandwidth=d.get("fractional_bandwidth", 0.8),
        )
