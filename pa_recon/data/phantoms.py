"""Procedural blood-vessel phantoms: the built-in training and test images (no download needed).

A phantom is a set of vessel trees. Each tree starts with a trunk that crosses the image along a random
direction (some trunks are forced near-vertical, the direction a top-edge array sees worst), wiggles around
that direction, tapers, and sheds thinner branches, which branch again. Vessels are rasterised with a
parabolic profile across their width (brightest on the centre line) and overlapping vessels combine by
maximum, so values stay in ``[0, 1]`` with a background of 0.

All lengths in :class:`VesselParams` are fractions of the image's longer side, so the same parameters give
the same-looking vessels on any grid (a 512² phantom downsampled by 4 resembles a 128² one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from pa_recon.checks import check_count, check_number
from pa_recon.errors import PAReconError

__all__ = ["VesselParams", "downsample", "vessel_phantom", "vessel_phantoms"]

# Memory bound for one rasterisation batch: (segments in batch) × (window pixels).
_RASTER_BATCH_ELEMENTS = 1 << 19


@dataclass(frozen=True)
class VesselParams:
    """Knobs of the vessel generator; lengths are fractions of ``max(nz, nx)``, angles in degrees.

    ``density`` scales the number of trees and the branching rate; ``thickness`` scales every radius.
    ``VesselParams(density=2.5, thickness=0.5)`` gives a denser, thinner out-of-distribution family.
    """

    n_trees: tuple[int, int] = (2, 4)
    density: float = 1.0
    thickness: float = 1.0
    trunk_radius: tuple[float, float] = (0.014, 0.032)
    branch_radius_ratio: tuple[float, float] = (0.45, 0.8)
    min_radius: float = 0.003
    branch_rate: float = 0.07
    branch_angle: tuple[float, float] = (25.0, 75.0)
    branch_length: tuple[float, float] = (0.15, 0.5)
    max_depth: int = 3
    step: float = 0.02
    tortuosity: float = 14.0
    bend: float = 60.0
    taper: float = 0.4
    vertical_fraction: float = 0.35
    vertical_spread: float = 10.0
    intensity: tuple[float, float] = (0.35, 1.0)

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.n_trees[0] <= self.n_trees[1], "n_trees must be an increasing pair of counts >= 1", "n_trees"),
            (self.density > 0, "density must be positive", "density"),
            (self.thickness > 0, "thickness must be positive", "thickness"),
            (0 < self.trunk_radius[0] <= self.trunk_radius[1], "trunk_radius must be an increasing positive pair",
             "trunk_radius"),
            (0 < self.branch_radius_ratio[0] <= self.branch_radius_ratio[1] < 1,
             "branch_radius_ratio must be an increasing pair in (0, 1)", "branch_radius_ratio"),
            (self.min_radius > 0, "min_radius must be positive", "min_radius"),
            (0 <= self.branch_rate <= 1, "branch_rate must be a probability", "branch_rate"),
            (0 < self.branch_length[0] <= self.branch_length[1], "branch_length must be an increasing positive pair",
             "branch_length"),
            (self.max_depth >= 0, "max_depth must be >= 0", "max_depth"),
            (self.step > 0, "step must be positive", "step"),
            (self.tortuosity >= 0, "tortuosity must be >= 0", "tortuosity"),
            (self.bend >= 0, "bend must be >= 0", "bend"),
            (self.taper >= 0, "taper must be >= 0", "taper"),
            (0 <= self.vertical_fraction <= 1, "vertical_fraction must be a probability", "vertical_fraction"),
            (0 <= self.intensity[0] <= self.intensity[1] <= 1, "intensity must be an increasing pair in [0, 1]",
             "intensity"),
        ]
        for ok, message, name in checks:
            if not ok:
                raise PAReconError(message, field=name)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> VesselParams:
        """Parameters from a plain mapping (a params section). Each value must have its default's type: an integer,
        a number, or a pair of them (a list or tuple); an unknown key, a value of another type or an invalid value
        raises :class:`PAReconError` (naming the key, where it is one)."""
        if not isinstance(values, Mapping):
            raise PAReconError(f"expected a mapping, got {values!r}")
        defaults = {f.name: f.default for f in fields(cls)}
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            raise PAReconError(f"unknown settings {unknown}; known: {sorted(defaults)}")
        return cls(**{name: _like(value, defaults[name], name) for name, value in values.items()})


def _like(value: Any, default: Any, name: str) -> Any:
    """``value`` of the setting ``name`` converted to the type of its ``default``: an int (not a bool), a float
    (from a finite int or float; numpy ones too) or a tuple of as many of them."""
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple) or len(value) != len(default):
            raise PAReconError(f"must be a list of {len(default)} numbers, got {value!r}", field=name)
        return tuple(_like(v, d, name) for v, d in zip(value, default))
    if isinstance(default, int):
        return check_count(value, name, minimum=None)
    return check_number(value, name)


@dataclass
class _Segments:
    """Growing list of vessel segments in pixel units (x = column, z = row)."""

    starts: list[np.ndarray]
    ends: list[np.ndarray]
    r_start: list[np.ndarray]
    r_end: list[np.ndarray]
    value: list[np.ndarray]

    def add(self, points: np.ndarray, radii: np.ndarray, value: float) -> None:
        if len(points) < 2:
            return
        self.starts.append(points[:-1])
        self.ends.append(points[1:])
        self.r_start.append(radii[:-1])
        self.r_end.append(radii[1:])
        self.value.append(np.full(len(points) - 1, value))


def vessel_phantom(nz: int, nx: int, rng: np.random.Generator, *, params: VesselParams | None = None) -> np.ndarray:
    """One phantom, shape ``(nz, nx)`` float32 in ``[0, 1]``; the same generator state gives the same image."""
    if nz < 1 or nx < 1:
        raise PAReconError(f"image size must be positive, got nz={nz}, nx={nx}", field="shape")
    params = params or VesselParams()
    size = max(nz, nx)
    step = params.step * size
    # Walks stop once the whole vessel (radius included) has left the image.
    margin = params.trunk_radius[1] * params.thickness * size + 2.0
    box = (-margin, nx - 1 + margin, -margin, nz - 1 + margin)
    segments = _Segments([], [], [], [], [])

    lo, hi = params.n_trees
    n_trees = max(1, round(rng.integers(lo, hi + 1) * params.density))
    for _ in range(n_trees):
        start = np.array([rng.uniform(0, nx - 1), rng.uniform(0, nz - 1)])
        if rng.random() < params.vertical_fraction:
            heading = np.pi / 2 + np.deg2rad(rng.normal(0.0, params.vertical_spread))
        else:
            heading = rng.uniform(0.0, np.pi)
        radius = rng.uniform(*params.trunk_radius) * params.thickness * size
        value = rng.uniform(*params.intensity)
        max_steps = int(np.ceil(np.hypot(box[1] - box[0], box[3] - box[2]) / step)) + 1
        # A trunk crosses the whole image: grow it both ways from its start point.
        for direction in (heading, heading + np.pi):
            _grow(segments, rng, params, start, direction, radius, value, max_steps, step, size, box, depth=0)

    if not segments.starts:
        return np.zeros((nz, nx), dtype=np.float32)
    return _rasterise(segments, nz, nx)


def vessel_phantoms(n: int, nz: int, nx: int, seed: int, params: VesselParams | None = None, *,
                    start: int = 0) -> np.ndarray:
    """Phantoms ``start .. start + n - 1`` of the family ``seed``, shape ``(n, nz, nx)`` float32.

    Image ``i`` depends only on ``(seed, i)``, so a large family can be generated in batches.
    """
    if n < 0 or start < 0:
        raise PAReconError(f"n and start must be >= 0, got n={n}, start={start}", field="n")
    out = np.empty((n, nz, nx), dtype=np.float32)
    for k in range(n):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(start + k,)))
        out[k] = vessel_phantom(nz, nx, rng, params=params)
    return out


def downsample(images: np.ndarray, factor: int) -> np.ndarray:
    """Area average over ``factor × factor`` blocks of the last two axes: ``(..., nz, nx)`` → ``(..., nz/f, nx/f)``.

    Both image sides must be multiples of ``factor``; the dtype is kept for floating inputs.
    """
    images = np.asarray(images)
    if factor < 1:
        raise PAReconError(f"downsampling factor must be >= 1, got {factor}", field="factor")
    if images.ndim < 2:
        raise PAReconError(f"images need at least 2 axes (nz, nx), got shape {images.shape}", field="images")
    nz, nx = images.shape[-2:]
    if nz % factor or nx % factor:
        raise PAReconError(f"image shape ({nz}, {nx}) is not divisible by factor {factor}", field="images")
    blocks = images.reshape(*images.shape[:-2], nz // factor, factor, nx // factor, factor)
    dtype = images.dtype if np.issubdtype(images.dtype, np.floating) else np.float64
    return blocks.mean(axis=(-3, -1), dtype=np.float64).astype(dtype)


def _grow(segments: _Segments, rng: np.random.Generator, params: VesselParams, start: np.ndarray, heading: float,
          radius: float, value: float, max_steps: int, step: float, size: int,
          box: tuple[float, float, float, float], depth: int) -> None:
    """Random-walk one vessel from ``start`` and recurse into its branches."""
    from scipy.signal import lfilter  # not at the top: every pa-recon command would pay scipy.signal's second to load

    n = max_steps
    # Heading = initial direction + slow bend + a stationary AR(1) wiggle (tortuosity keeps its direction).
    a = 0.85
    wiggle = lfilter([np.sqrt(1 - a * a)], [1.0, -a], rng.normal(0.0, np.deg2rad(params.tortuosity), n))
    bend = rng.normal(0.0, np.deg2rad(params.bend)) * step / size
    theta = heading + bend * np.arange(n) + wiggle
    steps = step * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    points = start + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])

    inside = ((points[:, 0] >= box[0]) & (points[:, 0] <= box[1]) & (points[:, 1] >= box[2]) & (points[:, 1] <= box[3]))
    n_keep = len(points) if inside.all() else int(np.argmin(inside)) + 1
    points, theta = points[:n_keep], theta[: max(n_keep - 1, 1)]

    arc = step * np.arange(n_keep) / size
    can_branch = depth < params.max_depth
    branch_at = np.flatnonzero(rng.random(n_keep) < params.branch_rate * params.density) if can_branch else []
    ratios = rng.uniform(*params.branch_radius_ratio, len(branch_at))
    # Murray's law: a parent that gives off a branch of radius r_b keeps (r^3 - r_b^3)^(1/3).
    shrink = np.ones(n_keep)
    shrink[branch_at] = (1.0 - ratios ** 3) ** (1.0 / 3.0)
    radii = radius * np.exp(-params.taper * arc) * np.cumprod(shrink)
    min_radius = params.min_radius * params.thickness * size
    alive = radii >= min_radius
    n_alive = len(radii) if alive.all() else int(np.argmin(alive))
    segments.add(points[:n_alive], radii[:n_alive], value)

    for k, ratio in zip(branch_at, ratios):
        if k >= n_alive:
            break
        child_radius = radii[k] / (1.0 - ratio ** 3) ** (1.0 / 3.0) * ratio
        if child_radius < min_radius:
            continue
        side = rng.choice([-1.0, 1.0])
        angle = theta[min(k, len(theta) - 1)] + side * np.deg2rad(rng.uniform(*params.branch_angle))
        length = rng.uniform(*params.branch_length) * size * 0.7 ** depth
        child_value = float(np.clip(value * rng.uniform(0.8, 1.1), 0.0, 1.0))
        child_steps = max(2, int(np.ceil(length / step)))
        _grow(segments, rng, params, points[k], angle, child_radius, child_value, child_steps, step, size, box,
              depth + 1)


def _rasterise(segments: _Segments, nz: int, nx: int) -> np.ndarray:
    """Max-combine tapered capsules with a parabolic cross-profile, each evaluated on its bounding window only."""
    a = np.concatenate(segments.starts)
    b = np.concatenate(segments.ends)
    ra = np.concatenate(segments.r_start)
    rb = np.concatenate(segments.r_end)
    value = np.concatenate(segments.value)
    # Half a pixel of extra support anti-aliases sub-pixel vessels.
    reach = np.maximum(ra, rb) + 0.5
    lo = np.floor(np.minimum(a, b) - reach[:, None]).astype(np.int64)
    hi = np.ceil(np.maximum(a, b) + reach[:, None]).astype(np.int64)
    width = int((hi - lo).max()) + 1
    offsets = np.arange(width)

    image = np.zeros(nz * nx, dtype=np.float64)
    batch = max(1, _RASTER_BATCH_ELEMENTS // (width * width))
    for s in range(0, len(a), batch):
        sl = slice(s, s + batch)
        px = (lo[sl, 0:1] + offsets)[:, None, :]
        pz = (lo[sl, 1:2] + offsets)[:, :, None]
        ab = b[sl] - a[sl]
        length2 = np.maximum((ab ** 2).sum(axis=1), 1e-12)[:, None, None]
        dx = px - a[sl, 0, None, None]
        dz = pz - a[sl, 1, None, None]
        t = np.clip((dx * ab[:, 0, None, None] + dz * ab[:, 1, None, None]) / length2, 0.0, 1.0)
        dist2 = (dx - t * ab[:, 0, None, None]) ** 2 + (dz - t * ab[:, 1, None, None]) ** 2
        r = ra[sl, None, None] + t * (rb[sl] - ra[sl])[:, None, None] + 0.5
        profile = value[sl, None, None] * np.clip(1.0 - dist2 / r ** 2, 0.0, None)
        keep = (profile > 0) & (px >= 0) & (px < nx) & (pz >= 0) & (pz < nz)
        flat = np.broadcast_to(pz * nx + px, keep.shape)[keep]
        np.maximum.at(image, flat, profile[keep])
    return image.reshape(nz, nx).astype(np.float32)
