"""The trainer shared by every model: marginal and conditional flows, and regression baselines alike."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping, Sized
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pa_recon.errors import PAReconError
from pa_recon.train.checkpoint import load_checkpoint, save_checkpoint
from pa_recon.train.config import TrainConfig
from pa_recon.train.ema import EMA
from pa_recon.train.tracking import Tracker, start_tracker

#: ``loss_fn(model, batch) -> (scalar loss to minimise, {metric name: float})``; ``batch`` is what the data
#: loader yields, moved to the device: a tensor, or a tuple such as ``(x, cond)``.
LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
#: ``sample_fn(model) -> images (n, c, h, w)`` with ``c`` 1 or 3 and values in [0, 1] (clipped when drawn).
SampleFn = Callable[[nn.Module], torch.Tensor]
#: Training or validation data: a map-style Dataset, a tensor (items along dim 0) or a tuple of tensors.
Data = Dataset | torch.Tensor | tuple[torch.Tensor, ...]


class TensorData(Dataset):
    """Items ``i`` of one tensor (yielding tensors) or of several equally long tensors (yielding tuples)."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        if not tensors or any(t.shape[0] != tensors[0].shape[0] for t in tensors):
            raise PAReconError(f"data tensors must share their first dimension, got shapes "
                               f"{[tuple(t.shape) for t in tensors]}")
        self.tensors = tensors

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, i: int) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(self.tensors) == 1:
            return self.tensors[0][i]
        return tuple(t[i] for t in self.tensors)


def seed_everything(seed: int) -> None:
    """Seed the torch (CPU and CUDA), NumPy and Python random generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def lr_multiplier(step: int, config: TrainConfig, total_steps: int) -> float:
    """Factor on ``config.lr`` for the optimizer step with index ``step`` (0-based); see :class:`TrainConfig`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    t = step - config.warmup_steps
    if config.schedule == "cosine":
        progress = min(t / max(1, total_steps - config.warmup_steps), 1.0)
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if config.schedule == "step":
        return config.decay_gamma ** (t // config.decay_every)
    if config.schedule == "exponential":
        return config.decay_gamma ** (t / config.decay_every)
    return 1.0


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> None:
    """Tile ``images (n, c, h, w)``, ``c`` 1 or 3, values in [0, 1] (clipped, NaN as 0), into one PNG.

    ``nrow`` images per row (default ``ceil(sqrt(n))``), separated by 2 white pixels.
    """
    import matplotlib.image

    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"expected images (n, 1 or 3, h, w), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    pad = 2
    grid = np.ones((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.float32)
    pixels = images.detach().float().nan_to_num(0.0).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    for k in range(n):
        i, j = divmod(k, nrow)
        grid[pad + i * (h + pad):pad + i * (h + pad) + h, pad + j * (w + pad):pad + j * (w + pad) + w] = pixels[k]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if c == 1:
        matplotlib.image.imsave(path, grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        matplotlib.image.imsave(path, grid)


class _Mean:
    """Running means of named floats; its state is plain data so resumed runs report the same means."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def pop(self, prefix: str) -> dict[str, float]:
        """The means with ``prefix`` on their names; resets."""
        means = {f"{prefix}{k}": v / self.count for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return means

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums, self.count = dict(state["sums"]), int(state["count"])


class Trainer:
    """Train ``model`` by minimising ``loss_fn`` over ``train_data`` with AdamW; see :class:`TrainConfig`.

    Files in ``config.out_dir``: ``last.pt`` (written every ``checkpoint_every`` steps and at the end),
    ``best.pt`` (lowest ``val/loss``), ``samples/step_XXXXXXX.png``. :meth:`fit` resumes from ``last.pt``
    when it exists, in this process or a later one, and continues the same MLflow run. A resumed run is
    bit-identical to an uninterrupted one on CPU: the data order depends only on ``(seed, epoch)`` and the
    random generators are restored. (With ``num_workers > 0``, randomness drawn inside worker processes is
    reproducible per ``(seed, epoch)`` but not across a resume in the middle of an epoch.)

    Validation and sampling use the EMA weights when ``ema_decay > 0``, run in fp32 under ``torch.no_grad``
    with the random generators re-seeded from ``config.seed`` (so the same noise and latents each time) and
    then restored, so they do not change the training trajectory. ``extra_params`` (e.g. the model section
    of params.yaml, nested allowed) are logged to MLflow next to the config.

    ``config.compile`` compiles ``model.forward`` for training and validation; a ``loss_fn`` that calls
    other methods (``model.log_prob``) runs those uncompiled.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        loss_fn: LossFn,
        train_data: Data,
        val_data: Data | None = None,
        sample_fn: SampleFn | None = None,
        extra_params: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.device = _resolve_device(config.device)
        self.model = model.to(self.device)
        self.loss_fn = loss_fn
        self.sample_fn = sample_fn
        self.extra_params = dict(extra_params or {})
        self.train_data, self.train_size = _as_dataset(train_data, "train_data")
        self.val_data = None if val_data is None else _as_dataset(val_data, "val_data")[0]
        self.steps_per_epoch = self.train_size // config.batch_size
        if self.steps_per_epoch == 0:
            raise PAReconError(f"train_data has {self.train_size} items, fewer than one batch", field="batch_size")
        self.total_steps = config.total_steps(self.steps_per_epoch)
        self.amp_dtype = _amp_dtype(config.amp, self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        total = self.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_multiplier(step, config, total))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.forward_model = cast(nn.Module, torch.compile(self.model)) if config.compile else self.model
        self.out_dir = Path(config.out_dir)
        self.step = 0
        self.best_metric: float | None = None
        self.metrics: dict[str, float] = {}
        self.run_id: str | None = None
        self._logged_steps: dict[str, int] = {}
        self.finished = False
        self._interval = _Mean()
        self._epoch = _Mean()

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    def lr_at(self, step: int) -> float:
        """The learning rate of the optimizer step with index ``step`` (0-based)."""
        return self.config.lr * lr_multiplier(step, self.config, self.total_steps)

    def fit(self) -> dict[str, float]:
        """Train to ``total_steps`` (resuming from ``last.pt`` if present); returns the final metrics.

        The metrics are the latest ``train/*`` interval means and ``val/*`` values, plus ``step``. A run whose
        ``last.pt`` is already finished returns its stored metrics without training or tracking.
        """
        if self.last_path.exists():
            self.load_state(load_checkpoint(self.last_path))
            if self.finished and self.step >= self.total_steps:
                return dict(self.metrics)
        else:
            seed_everything(self.config.seed)
        self.finished = False
        cfg = self.config
        tracker = start_tracker(cfg.tracking, cfg.tracking_uri, cfg.experiment, cfg.run_name, self.run_id)
        if tracker.run_id is not None and tracker.run_id != self.run_id:
            tracker.log_params({**cfg.to_dict(), **self.extra_params})
            self.run_id = tracker.run_id
        # A resumed training repeats the steps after its last checkpoint: their metrics are not logged twice.
        self._logged_steps = tracker.logged_steps()
        status = "FAILED"
        try:
            self._train(tracker)
            tracker.log_artifact(self.last_path, "checkpoints")
            if cfg.log_model and cfg.tracking:
                with self._ema_weights():
                    tracker.log_model(self.model)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            tracker.close(status)
        return dict(self.metrics)

    def validate(self) -> dict[str, float]:
        """Mean loss and metrics over ``val_data`` (weighted by batch size), as ``{"val/loss": ..., ...}``."""
        if self.val_data is None:
            raise PAReconError("no validation data was given", field="val_data")
        sums: dict[str, float] = {}
        count = 0
        with self._inference():
            for batch in DataLoader(self.val_data, batch_size=self.config.batch_size,
                                    num_workers=self.config.num_workers):
                batch = _to_device(batch, self.device)
                loss, values = self.loss_fn(self.forward_model, batch)
                n = _batch_size(batch)
                for k, v in {"loss": loss.item(), **values}.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * n
                count += n
        return {f"val/{k}": v / count for k, v in sums.items()}

    def sample(self) -> torch.Tensor:
        """Images from ``sample_fn`` drawn as in validation (EMA weights, fixed seed, no grad)."""
        if self.sample_fn is None:
            raise PAReconError("no sample_fn was given", field="sample_fn")
        with self._inference():
            return self.sample_fn(self.model)

    def state_dict(self) -> dict[str, Any]:
        """The full training state, as written to ``last.pt`` (layout in :mod:`pa_recon.train.checkpoint`)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "rng": _rng_state(),
            "best_metric": self.best_metric,
            "meters": {"interval": self._interval.state_dict(), "epoch": self._epoch.state_dict()},
            "metrics": dict(self.metrics),
            "run_id": self.run_id,
            "finished": self.finished,
            "config": self.config.to_dict(),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore everything :meth:`state_dict` saved; a mismatch with this model raises PAReconError."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None and state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            self._interval.load_state_dict(state["meters"]["interval"])
            self._epoch.load_state_dict(state["meters"]["epoch"])
            _set_rng_state(state["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise PAReconError(f"checkpoint does not match this model and training setup ({exc})",
                               file=self.last_path) from None
        self.step = int(state["step"])
        self.best_metric = state["best_metric"]
        self.metrics = dict(state["metrics"])
        self.run_id = state["run_id"]
        self.finished = bool(state["finished"])

    def _train(self, tracker: Tracker) -> None:
        with tqdm(total=self.total_steps, initial=self.step, desc="train", disable=not self.config.progress,
                  dynamic_ncols=True) as bar:
            while self.step < self.total_steps:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                for batch in self._epoch_loader(epoch, start):
                    values = self._train_step(batch)
                    self.step += 1
                    self._interval.add(values)
                    self._epoch.add(values)
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['loss']:.4g}", lr=f"{self.lr_at(self.step - 1):.3g}",
                                    refresh=False)
                    self._scheduled(tracker)
                    if self.step >= self.total_steps:
                        break
        if not self.finished:
            self._scheduled(tracker)

    def _epoch_loader(self, epoch: int, start: int) -> DataLoader:
        """Batches ``start, start + 1, ...`` of ``epoch``, in an order fixed by ``(seed, epoch)`` alone."""
        seed = int(np.random.SeedSequence((self.config.seed, epoch)).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        bs = self.config.batch_size
        order = torch.randperm(self.train_size, generator=generator)[start * bs:self.steps_per_epoch * bs]
        # Passing the generator also keeps the loader from drawing its worker seed from the global RNG.
        return DataLoader(self.train_data, batch_size=bs, sampler=order.tolist(), generator=generator,
                          num_workers=self.config.num_workers)

    def _train_step(self, batch: Any) -> dict[str, float]:
        self.model.train()
        batch = _to_device(batch, self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            loss, values = self.loss_fn(self.forward_model, batch)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise PAReconError(f"training loss is {loss_value} at step {self.step + 1}; lower the learning rate "
                               f"or check the data (last.pt keeps the last good state)")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        out = {"loss": loss_value, **values}
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            out["grad_norm"] = float(nn.utils.clip_grad_norm_(params, self.config.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return out

    def _scheduled(self, tracker: Tracker) -> None:
        """Logging, validation, samples and checkpoints due after the current step (all of them at the end)."""
        cfg, step = self.config, self.step
        final = step >= self.total_steps

        def due(every: int) -> bool:
            return final or (every > 0 and step % every == 0)

        logged: dict[str, float] = {}
        if self._interval.count and due(cfg.log_every):
            logged.update(self._interval.pop("train/"))
            logged["train/lr"] = self.lr_at(step - 1)
        if self._epoch.count and step % self.steps_per_epoch == 0:
            logged.update(self._epoch.pop("epoch/"))
            logged["epoch"] = step // self.steps_per_epoch
        if self.val_data is not None and due(cfg.val_every):
            val = self.validate()
            logged.update(val)
            if self.best_metric is None or val["val/loss"] < self.best_metric:
                self.best_metric = val["val/loss"]
                save_checkpoint(self.out_dir / "best.pt", self.state_dict())
        if logged:
            fresh = {k: v for k, v in logged.items() if step > self._logged_steps.get(k, -1)}
            if fresh:
                tracker.log_metrics(fresh, step)
            self.metrics.update({k: v for k, v in logged.items() if not k.startswith("epoch")})
            self.metrics["step"] = step
        if self.sample_fn is not None and due(cfg.sample_every):
            path = self.out_dir / "samples" / f"step_{step:07d}.png"
            save_image_grid(self.sample(), path)
            tracker.log_artifact(path, "samples")
        if due(cfg.checkpoint_every):
            self.finished = final
            save_checkpoint(self.last_path, self.state_dict())

    @contextmanager
    def _ema_weights(self) -> Iterator[None]:
        if self.ema is None:
            yield
        else:
            with self.ema.applied(self.model):
                yield

    @contextmanager
    def _inference(self) -> Iterator[None]:
        """EMA weights, eval mode, no grad, random generators seeded from the config and restored afterwards."""
        rng = _rng_state()
        was_training = self.model.training
        seed_everything(self.config.seed)
        self.model.eval()
        try:
            with self._ema_weights(), torch.no_grad():
                yield
        finally:
            self.model.train(was_training)
            _set_rng_state(rng)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PAReconError("device 'cuda' requested but no CUDA GPU is available", field="device")
    return torch.device(name)


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32 (always on CPU)."""
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def _as_dataset(data: Data, name: str) -> tuple[Dataset, int]:
    """The data as a map-style Dataset, and its length."""
    if isinstance(data, torch.Tensor):
        dataset: Dataset = TensorData(data)
    elif isinstance(data, tuple) and all(isinstance(t, torch.Tensor) for t in data):
        dataset = TensorData(*data)
    elif isinstance(data, Dataset) and isinstance(data, Sized):
        dataset = data
    else:
        raise PAReconError(f"expected a tensor, a tuple of tensors or a map-style Dataset, got {type(data).__name__}",
                           field=name)
    size = len(cast(Sized, dataset))
    if size == 0:
        raise PAReconError("is empty", field=name)
    return dataset, size


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, Mapping):
        return _batch_size(next(iter(batch.values())))
    return _batch_size(batch[0])


def _rng_state() -> dict[str, Any]:
    """States of the torch, CUDA, NumPy and Python generators as tensors and plain containers."""
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
