"""The run record of a training folder, ``run.json`` beside the trainer's checkpoints: the settings that shape the
model, training wall time summed over resumed processes, and the hardware. With it a folder is resumed when it
was trained with the same settings and cleared otherwise, so a long training can span several processes (or
interrupted ``dvc repro`` calls) without ever continuing a run made with other settings.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pa_recon.errors import PAReconError
from pa_recon.train.checkpoint import load_checkpoint
from pa_recon.train.config import TrainConfig
from pa_recon.train.trainer import LossFn, Trainer

RUN_FILE = "run.json"
"""The run record in a training folder: settings, training wall time and hardware."""

BOOKKEEPING = {"out_dir", "val_every", "sample_every", "checkpoint_every", "log_every", "device", "num_workers",
               "progress", "tracking", "tracking_uri", "experiment", "run_name", "log_model", "compile"}
"""Training options that do not change the trained model: changing them resumes a run instead of restarting."""


def hardware_name(device: torch.device) -> str:
    """A short description of the device: the GPU's name, or the CPU model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")]
        name = models[0] if models else name
    threads = torch.get_num_threads()
    return f"{name or 'CPU'} ({threads} thread{'' if threads == 1 else 's'})"


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The run record of a training folder (see :func:`open_run`)."""
    path = Path(run_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise PAReconError("no run record: train the model into this folder first", file=path) from None
    except (OSError, json.JSONDecodeError) as err:
        raise PAReconError(f"unreadable run record ({err})", file=path) from None
    return record


def open_run(config: TrainConfig, settings: Mapping[str, Any], resume_finished: bool = True) -> dict[str, Any]:
    """The run record of ``config.out_dir`` to continue, or a new one after clearing the folder.

    The record's ``settings`` are ``settings`` plus ``train``: the options of ``config`` that shape the result (all
    but :data:`BOOKKEEPING`). A folder whose record has the same settings is resumed from its ``last.pt`` (a
    finished run then returns at once), unless it is finished and not ``resume_finished``: then, as with other
    settings, its checkpoints, samples and record are removed and the training starts afresh. Prints which it is
    (resuming from step N, finished at step N, or starting afresh and why).
    """
    run_dir = Path(config.out_dir)
    wanted = json.loads(json.dumps(
        {**settings, "train": {k: v for k, v in config.to_dict().items() if k not in BOOKKEEPING}}))
    reason = "no run record"
    if (run_dir / RUN_FILE).is_file():
        record = read_run(run_dir)
        reason = "trained with other settings"
        if record.get("settings") == wanted:
            last = run_dir / "last.pt"
            state = load_checkpoint(last) if last.is_file() else None
            finished = bool(state and state.get("finished"))
            if resume_finished or not finished:
                if state is not None:
                    print(f"{run_dir}: finished at step {state['step']}; delete the folder to train again" if finished
                          else f"{run_dir}: resuming from step {state['step']}")
                return record
            reason = "finished"
    stale = [run_dir / name for name in ("last.pt", "best.pt", "samples", RUN_FILE) if (run_dir / name).exists()]
    if stale:
        print(f"{run_dir}: {reason}; starting afresh")
    for target in stale:
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    return {"settings": wanted, "train_seconds": 0.0, "hardware": []}


class WallClock:
    """Training wall time summed over processes, saved into the run record at the first training step and then at
    most every ``every`` seconds, so a killed process loses little of it and never leaves checkpoints without a
    record (which would start the next process afresh)."""

    def __init__(self, path: Path, record: dict[str, Any], every: float = 30.0) -> None:
        self.path, self.record, self.every = path, record, every
        self.start = self.saved_at = time.perf_counter()
        self.base = float(record["train_seconds"])
        self.ticked = False

    def note_hardware(self, name: str) -> None:
        """Add a device description to the record's ``hardware`` list (once)."""
        if name not in self.record["hardware"]:
            self.record["hardware"].append(name)

    def save(self) -> None:
        """Write the record with the time spent so far."""
        now = time.perf_counter()
        self.record["train_seconds"] = self.base + now - self.start
        write_json(self.path, self.record)
        self.saved_at = now

    def timed(self, loss_fn: LossFn) -> LossFn:
        """``loss_fn`` that also saves the clock when it is due."""

        def loss(model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
            first, self.ticked = not self.ticked, True
            if first or time.perf_counter() - self.saved_at >= self.every:
                self.save()
            return loss_fn(model, batch)

        return loss


def fit_recorded(config: TrainConfig, record: dict[str, Any], loss_fn: LossFn,
                 make_trainer: Callable[[LossFn], Trainer]) -> dict[str, float]:
    """Train with ``make_trainer(timed loss)`` and keep ``record`` (from :func:`open_run`) up to date in
    ``config.out_dir``: wall time and hardware. A finished run returns at once and leaves its folder untouched."""
    clock = WallClock(Path(config.out_dir) / RUN_FILE, record)
    trainer = make_trainer(clock.timed(loss_fn))
    clock.note_hardware(hardware_name(trainer.device))
    try:
        return trainer.fit()
    finally:
        if clock.ticked:
            clock.save()
