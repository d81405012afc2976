"""Checkpoint files: atomic ``torch.save`` of plain containers of tensors, read back with ``weights_only=True``.

A trainer checkpoint is a dict with the keys ``model``, ``optimizer``, ``scheduler``, ``scaler`` (state
dicts), ``ema`` (``None`` or ``{"shadow": {parameter name: tensor}, "updates": int}``), ``step``, ``epoch``,
``rng``, ``best_metric``, ``meters``, ``run_id``, ``finished`` and ``config`` (the plain dict of
:class:`~pa_recon.train.config.TrainConfig`). Other layers load priors with :func:`load_checkpoint` and
:func:`inference_state_dict`.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from pa_recon.errors import PAReconError


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new one, never a partial one.

    The state is saved to a temporary file in the same folder, flushed to disk and renamed over ``path``;
    if anything fails the temporary file is removed and the old checkpoint is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``torch.load(..., weights_only=True)``.

    Raises :class:`PAReconError` naming the file when it is missing, truncated, not a dict, or holds objects
    other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise PAReconError("is a folder, not a checkpoint file" if path.is_dir() else "checkpoint file not found",
                           file=path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, which would unpickle (run) whatever the file holds.
        raise PAReconError("not a readable checkpoint (not a torch file, or it holds objects other than tensors "
                           "and plain containers)", file=path) from None
    except (RuntimeError, EOFError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
        raise PAReconError(f"not a readable checkpoint ({type(exc).__name__}: {first_line})", file=path) from None
    if not isinstance(state, dict):
        raise PAReconError(f"checkpoint holds a {type(state).__name__}, expected a dict", file=path)
    return state


def inference_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights to use for validation, sampling and reconstruction.

    These are the EMA weights where the run kept an EMA, else the trained weights; buffers always come from
    the trained model.
    """
    weights = dict(checkpoint["model"])
    ema = checkpoint.get("ema")
    if ema is not None:
        weights.update(ema["shadow"])
    return weights
