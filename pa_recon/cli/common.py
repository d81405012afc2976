"""Helpers shared by the sub-commands: params sections, devices, batched progress."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

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


def geometry_from_params(path: str | Path) -> tuple[Grid, LinearArray]:
    """The reconstruction grid and the array from the ``geometry`` section (array given by count and pitch)."""
    geometry = load_params(path, "geometry")
    try:
        return Grid(**geometry["grid"]), LinearArray.uniform(**geometry["array"])
    except (KeyError, TypeError) as err:
        raise PAReconError(f"incomplete or unknown geometry settings: {err}", file=path, field="geometry") from None


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
