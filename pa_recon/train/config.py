"""The training configuration: one flat dataclass, readable from a params.yaml section."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pa_recon.checks import check_count, check_number
from pa_recon.errors import PAReconError

SCHEDULES = ("cosine", "step", "exponential", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Everything the trainer needs besides the model, the loss and the data.

    Length: exactly one of ``max_steps`` or ``epochs``; an epoch is ``len(train_data) // batch_size`` steps
    (the incomplete last batch is dropped so every step sees a full batch).

    Learning rate: linear warm-up from 0 over ``warmup_steps``, then ``schedule``:

    - ``cosine``: from ``lr`` down to ``lr * min_lr_ratio`` at the last step;
    - ``step``: multiplied by ``decay_gamma`` every ``decay_every`` steps;
    - ``exponential``: the same decay applied smoothly, ``lr * decay_gamma ** (t / decay_every)``;
    - ``constant``.

    Intervals (``val_every``, ``sample_every``, ``checkpoint_every``, ``log_every``) are in optimizer steps;
    0 means only at the end of training. ``grad_clip`` is a maximum global L2 norm (0 = off);
    ``ema_decay`` 0 turns the exponential moving average of the weights off.

    ``amp``: ``auto`` is bf16 autocast on a GPU that supports it, else fp16 with loss scaling on a GPU, and
    fp32 on CPU; ``bf16``/``fp16`` force that on GPU (CPU always runs fp32); ``off`` is fp32 everywhere.

    Tracking: ``tracking: false`` runs without MLflow (not even imported). ``tracking_uri`` is any MLflow
    URI (default: an SQLite file in the working directory).
    """

    out_dir: str = "outputs/train"
    max_steps: int | None = None
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    decay_every: int = 1000
    decay_gamma: float = 0.5
    grad_clip: float = 1.0
    amp: str = "auto"
    compile: bool = False
    ema_decay: float = 0.0
    val_every: int = 1000
    sample_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    progress: bool = True
    tracking: bool = True
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "pa_recon"
    run_name: str | None = None
    log_model: bool = True

    def __post_init__(self) -> None:
        if (self.max_steps is None) == (self.epochs is None):
            raise PAReconError("set exactly one of max_steps and epochs", field="max_steps")
        # Counts and numbers are stored as Python ints and floats (numpy ones are accepted).
        length = "max_steps" if self.max_steps is not None else "epochs"
        for name in ("batch_size", "decay_every", length):
            setattr(self, name, check_count(getattr(self, name), name, minimum=1))
        for name in ("warmup_steps", "val_every", "sample_every", "checkpoint_every", "log_every", "num_workers"):
            setattr(self, name, check_count(getattr(self, name), name))
        self.lr = check_number(self.lr, "lr", above=0)
        for name in ("weight_decay", "grad_clip"):
            setattr(self, name, check_number(getattr(self, name), name, minimum=0))
        self.min_lr_ratio = check_number(self.min_lr_ratio, "min_lr_ratio", minimum=0, maximum=1)
        self.decay_gamma = check_number(self.decay_gamma, "decay_gamma", above=0, maximum=1)
        self.ema_decay = check_number(self.ema_decay, "ema_decay", minimum=0, below=1)
        self.seed = check_count(self.seed, "seed")
        for name, allowed in (("schedule", SCHEDULES), ("amp", AMP_MODES), ("device", DEVICES)):
            _require(self, name, getattr(self, name) in allowed, f"one of {', '.join(allowed)}")
        for name in ("compile", "progress", "tracking", "log_model"):
            _require(self, name, isinstance(getattr(self, name), bool), "true or false")
        for name in ("out_dir", "tracking_uri", "experiment"):
            _require(self, name, isinstance(getattr(self, name), str) and getattr(self, name) != "",
                     "a non-empty string")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a plain mapping (e.g. a params.yaml section); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PAReconError(f"unknown training option(s); known: {', '.join(sorted(known))}",
                               field=", ".join(unknown))
        return cls(**values)

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run, given the steps in one epoch."""
        if self.max_steps is not None:
            return self.max_steps
        assert self.epochs is not None  # __post_init__ requires one of the two
        return self.epochs * steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (what checkpoints store and MLflow logs as params)."""
        return dataclasses.asdict(self)


def _require(config: TrainConfig, name: str, ok: bool, expected: str) -> None:
    if not ok:
        raise PAReconError(f"must be {expected}, got {getattr(config, name)!r}", field=name)
