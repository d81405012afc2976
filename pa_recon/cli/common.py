"""Helpers shared by the sub-commands: params sections, devices, batched progress."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from pa_recon.data.families import make_phantoms
from pa_recon.errors import PAReconError
from pa_recon.physics import Grid, LinearArray


def load_params(path: str | Path, section: str) -> dict[str, Any]:
    """The ``section`` mapping of a params YAML file."""
    try:
        params = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise PAReconError(f"cannot read params file ({err.strerror})", file=path) from None
    except yaml.YAMLError as err:
        raise PAReconError(f"not valid YAML: {err}", file=path) from None
    if not isinstance(params, dict) or not isinstance(params.get(section), dict):
        raise PAReconError("missing section", file=path, field=section)
    return params[section]


def benchmark_profile(path: str | Path, required: Sequence[str],
                      profile_required: Sequence[str] = ()) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The ``benchmark`` section of a benchmark params file (which must hold ``profile`` and the ``required`` keys),
    the name of its active profile and that profile's section of ``profiles`` (which must hold ``profile_required``).

    Applies the profile's optional ``cpu_threads`` (torch's CPU threads; absent or null: torch's default).
    """
    bench = load_params(path, "benchmark")
    missing = [k for k in ("profile", *required) if k not in bench]
    if missing:
        raise PAReconError(f"missing settings {missing}", file=path, field="benchmark")
    profiles = load_params(path, "profiles")
    name = bench["profile"]
    profile = profiles.get(name)
    if not isinstance(profile, dict):
        raise PAReconError(f"profile {name!r} is not defined; defined: {sorted(profiles)}", file=path,
                           field="benchmark.profile")
    missing = [k for k in profile_required if k not in profile]
    if missing:
        raise PAReconError(f"missing settings {missing}", file=path, field=f"profiles.{name}")
    threads = profile.get("cpu_threads")
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise PAReconError(f"must be a positive integer, got {threads!r}", file=path,
                               field=f"profiles.{name}.cpu_threads")
        torch.set_num_threads(threads)
    return bench, name, profile


def geometry_from_params(path: str | Path) -> tuple[Grid, LinearArray]:
    """The reconstruction grid and the array from the ``geometry`` section (array given by count and pitch)."""
    geometry = load_params(path, "geometry")
    try:
        return Grid(**geometry["grid"]), LinearArray.uniform(**geometry["array"])
    except (KeyError, TypeError) as err:
        raise PAReconError(f"incomplete or unknown geometry settings: {err}", file=path, field="geometry") from None


def family_phantoms(path: str | Path, family: Mapping[str, Any], n: int, seed: int) -> tuple[Grid, np.ndarray]:
    """``n`` phantoms ``(n, nz, nx)`` of a phantom family (``source``, ``vessels``, ``split`` as in ``test_sets`` or
    ``priors.data``) on the simulation grid of the params file ``path``: its reconstruction grid refined
    ``phantoms.refine`` times (default 2). Returns that grid and the images."""
    common = load_params(path, "phantoms")
    grid, _ = geometry_from_params(path)
    fine = grid.refined(int(common.get("refine", 2)))
    images = make_phantoms(n, fine.nz, fine.nx, seed, source=family.get("source", "procedural"),
                           vessels=family.get("vessels"), mask_dir=common.get("vessel_masks_dir"),
                           split=family.get("split", "val"))
    return fine, images


def pick_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PAReconError("CUDA was asked for but is not available", field="--device")
    return torch.device(name)


def batches(total: int, size: int, desc: str) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` scan ranges of at most ``size``, with a progress bar over scans."""
    with tqdm(total=total, desc=desc, unit="scan") as bar:
        for start in range(0, total, size):
            stop = min(total, start + size)
            yield start, stop
            bar.update(stop - start)
