"""Unconditional flows on 8-bit image datasets: data, model layouts, training, bits/dim evaluation, timing and
figures. Shared by the MNIST benchmark (pipelines/mnist) and any other (C, H, W) 8-bit image benchmark.

Conventions. Images are integer-valued tensors (N, C, H, W) with values 0 … 2^n − 1 (stored as uint8, converted
to float per batch). Every model has a dequantizer, so its likelihood is a lower bound on the discrete
log-probability. Bits per dimension of a batch are ``−log P(x) / (D ln 2)`` with ``D = C·H·W``; with y = (x + u)/2^n
in [0, 1)^D this equals ``−log p(y)/(D ln 2) + n`` (the division by 2^n is part of the flow's log-determinant).
``evaluate_bits_per_dim`` reports the importance-weighted bound over K dequantization draws (a tighter bound;
the UvA tutorial 11 uses K = 8) next to the single-draw bound averaged over the same draws.

Model layouts (``build_image_flow``) are plain mappings, so they can live in a params.yaml::

    dequantization: {kind: variational, steps: 4, features: 16, subnet: {kind: gated, hidden: 16, blocks: 3}}
    logit_alpha: 1.0e-5            # logit pre-transform after dequantization (null: none)
    layers:                        # data -> latent order; C, H, W follow the squeezes and splits
      - {checkerboard: 2, subnet: {kind: gated, hidden: 32, blocks: 3}}   # 2 checkerboard affine couplings
      - squeeze                                                          # (C, H, W) -> (4C, H/2, W/2)
      - {channel: 2, subnet: {kind: gated, hidden: 48, blocks: 3}}        # 2 channel-mask affine couplings
      - split                                                            # half the channels leave (N(0, I))
      - {glow: 4, subnet: {kind: resnet, hidden: 64, blocks: 2}}          # 4 x (ActNorm, 1x1 conv, coupling)
      - {split: conditional, subnet: {hidden: 32, blocks: 1}}            # split with a learned Gaussian prior

Consecutive couplings alternate their mask parity; log-scales are ``scale_bound * tanh(raw / scale_bound)``; the
last latent gets a standard normal prior.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pa_recon.data.mnist import load_mnist
from pa_recon.errors import PAReconError
from pa_recon.flows import (
    ActNorm,
    AffineCoupling,
    Flow,
    GaussianPrior,
    InvConv1x1,
    LogitTransform,
    Split,
    Squeeze,
    SubnetConfig,
    UniformDequantization,
    VariationalDequantization,
)
from pa_recon.flows.base import Shape
from pa_recon.train.checkpoint import inference_state_dict, load_checkpoint
from pa_recon.train.config import TrainConfig
from pa_recon.train.trainer import LossFn, Trainer, save_image_grid

RUN_FILE = "run.json"
"""The run record in a training folder: settings, model layout, training wall time and hardware."""


# ------------------------------------------------------------------------------------------------------- data
def image_tensor(images: np.ndarray) -> Tensor:
    """uint8 images (N, H, W) (one channel) or (N, H, W, C) -> uint8 tensor (N, C, H, W)."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise PAReconError(f"expected uint8 images (N, H, W) or (N, H, W, C), got {images.dtype} {images.shape}",
                           field="images")
    t = torch.from_numpy(np.ascontiguousarray(images))
    return t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


def _mnist(root: Path) -> tuple[np.ndarray, np.ndarray]:
    return load_mnist(root, "train")[0], load_mnist(root, "test")[0]


IMAGE_DATASETS: dict[str, Callable[[Path], tuple[np.ndarray, np.ndarray]]] = {"mnist": _mnist}
"""Dataset name -> reader of (training images, test images) as uint8 arrays from a folder."""


@dataclass(frozen=True)
class ImageSplits:
    """uint8 image tensors (N, C, H, W): training, validation (the end of the training file) and test."""

    train: Tensor
    val: Tensor
    test: Tensor

    @property
    def shape(self) -> Shape:
        """Per-image shape (C, H, W)."""
        c, h, w = self.train.shape[1:]
        return c, h, w


def load_image_splits(dataset: str, root: str | os.PathLike[str], val_size: int,
                      subset: Mapping[str, int] | None = None) -> ImageSplits:
    """Read ``dataset`` from ``root``; the last ``val_size`` training images become the validation set.

    ``subset`` ({"train": n, "val": n, "test": n}, any of them) keeps the first n images of a split (smoke runs).
    """
    if dataset not in IMAGE_DATASETS:
        raise PAReconError(f"unknown dataset; known: {sorted(IMAGE_DATASETS)}", field="dataset")
    train_all, test = (image_tensor(a) for a in IMAGE_DATASETS[dataset](Path(root)))
    if not 0 < val_size < train_all.shape[0]:
        raise PAReconError(f"must lie in 1 … {train_all.shape[0] - 1}, got {val_size}", field="val_size")
    splits = {"train": train_all[:-val_size], "val": train_all[-val_size:], "test": test}
    for name, n in (subset or {}).items():
        if name not in splits or not isinstance(n, int) or n < 1:
            raise PAReconError(f"expected a positive image count for train, val or test, got {name}: {n!r}",
                               field="subset")
        splits[name] = splits[name][:n]
    return ImageSplits(**splits)


# ----------------------------------------------------------------------------------------------------- models
_LAYOUT_KEYS = {"layers", "dequantization", "logit_alpha", "scale_bound", "n_bits"}
_DEQUANT_KEYS = {"kind", "steps", "subnet", "features"}


def _subnet(values: Any, override: SubnetConfig | None, field: str) -> SubnetConfig:
    if override is not None:
        return override
    if values is None:
        return SubnetConfig()
    try:
        return SubnetConfig(**values)
    except TypeError as err:
        raise PAReconError(str(err), field=field) from None


def _count(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PAReconError(f"expected a positive integer, got {value!r}", field=field)
    return value


def _layer(entry: Any, shape: Shape, override: SubnetConfig | None, bound: float,
           field: str) -> tuple[list[nn.Module], Shape]:
    """The modules of one ``layers`` entry at input shape (C, H, W), and the shape after them."""
    c, h, w = shape
    if entry == "squeeze":
        if h % 2 or w % 2:
            raise PAReconError(f"cannot squeeze an odd size {(h, w)}", field=field)
        return [Squeeze()], (4 * c, h // 2, w // 2)
    if entry == "split":
        entry = {"split": "standard"}
    kinds = {"checkerboard", "channel", "glow", "split"} & set(entry if isinstance(entry, Mapping) else ())
    if len(kinds) != 1 or not set(entry) <= kinds | {"subnet"}:
        raise PAReconError(f"expected squeeze, split or one of {{checkerboard|channel|glow|split: …, subnet: …}}, "
                           f"got {entry!r}", field=field)
    (kind,) = kinds
    subnet = _subnet(entry.get("subnet"), override, f"{field}.subnet")
    if kind == "split":
        if entry["split"] not in ("standard", "conditional"):
            raise PAReconError(f"split prior must be standard or conditional, got {entry['split']!r}", field=field)
        split = Split(c, entry["split"], 0, subnet)
        return [split], (split.n_kept, h, w)
    n = _count(entry[kind], f"{field}.{kind}")
    mask: Literal["checkerboard", "channel"] = "checkerboard" if kind == "checkerboard" else "channel"
    modules: list[nn.Module] = []
    for i in range(n):
        if kind == "glow":
            modules += [ActNorm(c), InvConv1x1(c)]
        modules.append(AffineCoupling(c, mask, i % 2, subnet, 0, "tanh", bound))
    return modules, shape


def build_image_flow(layout: Mapping[str, Any], shape: Shape, subnet: SubnetConfig | None = None) -> Flow:
    """The flow a layout mapping describes (see the module docstring) for images of shape (C, H, W).

    ``subnet``, when given, replaces every sub-network of the layout (couplings, learned split priors and the
    variational dequantizer): smoke runs keep an architecture's structure but shrink its width.
    """
    unknown = sorted(set(layout) - _LAYOUT_KEYS)
    if unknown or "layers" not in layout:
        raise PAReconError(f"a layout needs 'layers' and may set {sorted(_LAYOUT_KEYS - {'layers'})}; "
                           f"unknown: {unknown}", field="layers" if not unknown else unknown[0])
    n_bits = int(layout.get("n_bits", 8))
    bound = float(layout.get("scale_bound", 2.0))
    dequant = dict(layout.get("dequantization") or {"kind": "uniform"})
    if not set(dequant) <= _DEQUANT_KEYS or dequant.get("kind") not in ("uniform", "variational"):
        raise PAReconError(f"expected kind uniform or variational and optional {sorted(_DEQUANT_KEYS - {'kind'})}, "
                           f"got {dequant}", field="dequantization")
    dequantizer: UniformDequantization
    if dequant["kind"] == "uniform":
        dequantizer = UniformDequantization(n_bits)
    else:
        dequantizer = VariationalDequantization(
            shape[0], n_bits, _count(dequant.get("steps", 4), "dequantization.steps"),
            _subnet(dequant.get("subnet"), subnet, "dequantization.subnet"),
            _count(dequant.get("features", 16), "dequantization.features"))
    modules: list[nn.Module] = []
    alpha = layout.get("logit_alpha", 1e-5)
    if alpha is not None:
        modules.append(LogitTransform(float(alpha), shape[0]))
    current = shape
    for i, entry in enumerate(layout["layers"]):
        added, current = _layer(entry, current, subnet, bound, f"layers[{i}]")
        modules += added
    return Flow(modules, GaussianPrior(current[0]), shape, dequantization=dequantizer)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def device_of(model: nn.Module) -> torch.device:
    """The device of a model's parameters."""
    return next(model.parameters()).device


# -------------------------------------------------------------------------------------------------- likelihood
def bits_per_dim_loss(model: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Trainer loss: mean bits/dim of an integer batch (B, C, H, W) under one dequantization draw."""
    return cast(Flow, model).bits_per_dim(batch.float()).mean(), {}


def bits_per_dim_bounds(log_weights: Tensor, dims: int) -> tuple[Tensor, Tensor]:
    """(importance-weighted, single-draw) bits/dim per image, both (B,), from (K, B) dequantization log-weights
    ``log p(y_k) + log_weight_k`` in nats of images with ``dims`` values each.

    Importance-weighted: −(logsumexp_k w_k − log K) / (D ln 2). Single-draw: −mean_k w_k / (D ln 2), the
    variational bound averaged over the same draws; by Jensen's inequality it is never lower. Equal when K = 1.
    """
    w = log_weights.double()
    scale = dims * math.log(2.0)
    importance = -(torch.logsumexp(w, dim=0) - math.log(w.shape[0])) / scale
    return importance, -w.mean(dim=0) / scale


@dataclass(frozen=True)
class BitsPerDim:
    """Mean bits/dim over ``n_images``: importance-weighted with ``n_samples`` draws, and the single-draw bound."""

    importance: float
    single_draw: float
    n_samples: int
    n_images: int


@torch.no_grad()
def evaluate_bits_per_dim(model: Flow, images: Tensor, n_samples: int = 8, batch_size: int = 64,
                          progress: bool = False) -> BitsPerDim:
    """Bits/dim of integer images (N, C, H, W) on the model's device, ``batch_size`` images (each drawn
    ``n_samples`` times) per forward pass."""
    device = device_of(model)
    sums = torch.zeros(2, dtype=torch.float64)
    for start in tqdm(range(0, images.shape[0], batch_size), desc="bits/dim", disable=not progress):
        x = images[start:start + batch_size].to(device).float()
        bounds = bits_per_dim_bounds(model.log_weights(x, n_samples=n_samples), x[0].numel())
        sums += torch.stack([b.sum() for b in bounds]).cpu()
    n = images.shape[0]
    return BitsPerDim(float(sums[0]) / n, float(sums[1]) / n, n_samples, n)


# ------------------------------------------------------------------------------------------------------ timing
def median_ms(fn: Callable[[], object], device: torch.device, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls after one warm-up call (CUDA work is
    synchronised before each clock reading)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


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


# ----------------------------------------------------------------------------------------------------- figures
def _pixels(model: Flow, x: Tensor) -> Tensor:
    """Integer images -> [0, 1] for PNG grids."""
    assert model.dequantization is not None
    return x.float() / (model.dequantization.levels - 1)


@torch.no_grad()
def save_samples(model: Flow, path: str | Path, n: int = 64, temperature: float = 1.0) -> None:
    """A PNG grid of ``n`` samples drawn with the prior's standard deviations scaled by ``temperature``."""
    save_image_grid(_pixels(model, model.sample(n, temperature=temperature)), path)


@torch.no_grad()
def save_interpolations(model: Flow, x_a: Tensor, x_b: Tensor, path: str | Path, steps: int = 10) -> None:
    """A PNG with one row per pair (x_a[i], x_b[i]) of integer images (P, C, H, W): ``steps`` decodings along the
    straight line between their latents (end points included)."""
    device = device_of(model)
    path_images = model.interpolate(x_a.to(device).float(), x_b.to(device).float(), steps)  # (steps, P, C, H, W)
    save_image_grid(_pixels(model, path_images.transpose(0, 1).flatten(0, 1)), path, nrow=steps)


@torch.no_grad()
def save_split_resamples(model: Flow, x: Tensor, path: str | Path, resampled: int, n: int = 8,
                         temperature: float = 1.0) -> None:
    """A PNG with one row per integer image of x (B, C, H, W): the image, then ``n`` decodings in which the first
    ``resampled`` (finest) split latents are drawn afresh from their priors and the later latents are kept."""
    if not 1 <= resampled < len(model.latent_shapes):
        raise PAReconError(f"this flow has {len(model.latent_shapes) - 1} split latent(s), cannot resample "
                           f"{resampled}", field="resampled")
    assert model.dequantization is not None
    x = x.to(device_of(model)).float()
    kept = model.encode(x)[resampled:]
    columns = [x]
    for _ in range(n):
        latents: list[Tensor | None] = [None] * resampled
        y = model.inverse([*latents, *kept], temperature=temperature).y
        columns.append(model.dequantization.quantize(y))
    save_image_grid(_pixels(model, torch.stack(columns, dim=1).flatten(0, 1)), path, nrow=n + 1)


# ------------------------------------------------------------------------------------------------- run folder
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
    """The run record of a training folder (see :func:`train_image_flow`)."""
    path = Path(run_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise PAReconError("no run record: train the model into this folder first", file=path) from None
    except (OSError, json.JSONDecodeError) as err:
        raise PAReconError(f"unreadable run record ({err})", file=path) from None
    return record


def fresh_run_dir(run_dir: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The run record to continue, or a new one after clearing a folder trained with other settings."""
    if (run_dir / RUN_FILE).is_file():
        record = read_run(run_dir)
        if record.get("settings") == settings:
            return record
    stale = [run_dir / name for name in ("last.pt", "best.pt", "samples", RUN_FILE) if (run_dir / name).exists()]
    if stale:
        print(f"{run_dir}: trained with other settings; starting afresh")
    for target in stale:
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    return {"settings": dict(settings), "train_seconds": 0.0, "hardware": []}


BOOKKEEPING = {"out_dir", "val_every", "sample_every", "checkpoint_every", "log_every", "device", "num_workers",
                "progress", "tracking", "tracking_uri", "experiment", "run_name", "log_model", "compile"}
"""Training options that do not change the trained model: changing them resumes a run instead of restarting."""


class WallClock:
    """Training wall time summed over processes, saved into the run record at most every ``every`` seconds, so
    a killed process loses little of it."""

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
            self.ticked = True
            if time.perf_counter() - self.saved_at >= self.every:
                self.save()
            return loss_fn(model, batch)

        return loss


def train_image_flow(layout: Mapping[str, Any], config: TrainConfig, splits: ImageSplits,
                     subnet: SubnetConfig | None = None, settings: Mapping[str, Any] | None = None,
                     extra_params: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Train the flow of ``layout`` on ``splits`` by bits/dim into ``config.out_dir``; returns the final metrics.

    The folder gets the trainer's files (``last.pt``, ``best.pt``, ``samples/``) and ``run.json``: ``settings``
    (``layout``, ``subnet``, ``shape``, the training options that shape the result, and the caller's
    ``settings``, e.g. the data selection), the training wall time ``train_seconds`` summed over processes, and
    the ``hardware`` used. A folder trained with the same settings is resumed (from ``last.pt``, also after a
    finished run, which then returns at once); one trained with other settings is cleared first.
    """
    run_dir = Path(config.out_dir)
    trajectory = {k: v for k, v in config.to_dict().items() if k not in BOOKKEEPING}
    recorded = {"layout": dict(layout), "subnet": None if subnet is None else vars(subnet),
                "shape": list(splits.shape), "train": trajectory, **(settings or {})}
    record = fresh_run_dir(run_dir, json.loads(json.dumps(recorded)))
    torch.manual_seed(config.seed)
    model = build_image_flow(layout, splits.shape, subnet)
    n_samples = 64

    def draw(flow: nn.Module) -> Tensor:
        return _pixels(cast(Flow, flow), cast(Flow, flow).sample(n_samples))

    clock = WallClock(run_dir / RUN_FILE, record)
    trainer = Trainer(model, config, clock.timed(bits_per_dim_loss), splits.train, splits.val, sample_fn=draw,
                      extra_params={"layout": dict(layout), **(extra_params or {})})
    clock.note_hardware(hardware_name(trainer.device))
    try:
        return trainer.fit()
    finally:
        if clock.ticked:  # a finished run returns without training and leaves its folder untouched
            clock.save()


def load_trained_flow(run_dir: str | Path, device: torch.device) -> tuple[Flow, dict[str, Any], dict[str, Any]]:
    """The finished model of a training folder on ``device`` in eval mode (weights of ``best.pt``, the lowest
    validation loss, else of ``last.pt``; EMA weights where kept), its run record and its checkpoint."""
    run_dir = Path(run_dir)
    record = read_run(run_dir)
    last = load_checkpoint(run_dir / "last.pt", map_location=device)
    if not last.get("finished"):
        raise PAReconError(f"training stopped at step {last.get('step')} before the end; run it again to resume",
                           file=run_dir / "last.pt")
    best = run_dir / "best.pt"
    checkpoint = load_checkpoint(best, map_location=device) if best.is_file() else last
    s = record["settings"]
    subnet = None if s["subnet"] is None else SubnetConfig(**s["subnet"])
    c, h, w = s["shape"]
    model = build_image_flow(s["layout"], (c, h, w), subnet)
    model.load_state_dict(inference_state_dict(checkpoint))
    return model.to(device).eval(), record, checkpoint


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings: ``n_samples`` dequantization draws per image (importance sampling), ``batch_size``
    images per pass (and per timing), ``timing_repeats``; figures: sample grids of ``grid_size`` images at each of
    ``temperatures``, ``interpolation_pairs`` rows of ``interpolation_steps`` images, ``split_rows`` rows of
    ``split_resamples`` re-drawn early-split latents at ``split_temperature``; ``seed``; ``device``."""

    n_samples: int = 8
    batch_size: int = 64
    timing_repeats: int = 5
    temperatures: tuple[float, ...] = (0.5, 0.7, 0.85, 1.0)
    grid_size: int = 64
    interpolation_pairs: int = 6
    interpolation_steps: int = 10
    split_rows: int = 6
    split_resamples: int = 8
    split_temperature: float = 1.0
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EvalConfig:
        """From a params.yaml section; unknown keys raise PAReconError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PAReconError(f"unknown evaluation settings; known: {sorted(known)}", field=unknown[0])
        settings = dict(values)
        if "temperatures" in settings:
            settings["temperatures"] = tuple(float(t) for t in settings["temperatures"])
        return cls(**settings)


def evaluate_image_flow(model: Flow, splits: ImageSplits, config: EvalConfig, out_dir: str | Path,
                        progress: bool = True) -> dict[str, Any]:
    """Bits/dim on the validation and test images, timings, parameter count and figures (PNG in ``out_dir``).

    Returns ``val_bpd`` / ``test_bpd`` (importance-weighted, ``n_samples`` draws), ``val_bpd_single_draw`` /
    ``test_bpd_single_draw``, ``inference_ms`` (one bits/dim pass, one draw, ``batch_size`` test images),
    ``sampling_ms`` (``batch_size`` samples at temperature 1), ``parameters``, ``n_samples``, ``batch_size``,
    ``n_val``, ``n_test``, ``device`` and the names of the figure files. Timings are fp32.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = device_of(model)
    torch.manual_seed(config.seed)
    result: dict[str, Any] = {"parameters": count_parameters(model), "n_samples": config.n_samples,
                              "batch_size": config.batch_size, "device": hardware_name(device)}
    for name, images in (("val", splits.val), ("test", splits.test)):
        bpd = evaluate_bits_per_dim(model, images, config.n_samples, config.batch_size, progress)
        result.update({f"{name}_bpd": bpd.importance, f"{name}_bpd_single_draw": bpd.single_draw,
                       f"n_{name}": bpd.n_images})
    batch = splits.test[:config.batch_size].to(device).float()
    with torch.no_grad():
        result["inference_ms"] = median_ms(lambda: model.bits_per_dim(batch), device, config.timing_repeats)
        result["sampling_ms"] = median_ms(lambda: model.sample(config.batch_size), device, config.timing_repeats)
    figures = []
    for t in config.temperatures:
        torch.manual_seed(config.seed)
        figures.append(f"samples_T{t:.2f}.png")
        save_samples(model, out / figures[-1], config.grid_size, t)
    pairs = splits.test[:2 * config.interpolation_pairs]
    n_pairs = pairs.shape[0] // 2
    if n_pairs:
        figures.append("interpolation.png")
        save_interpolations(model, pairs[:n_pairs], pairs[n_pairs:2 * n_pairs], out / figures[-1],
                            config.interpolation_steps)
    for level in range(1, len(model.latent_shapes)):
        torch.manual_seed(config.seed)
        figures.append(f"split_resample_level{level}.png")
        save_split_resamples(model, splits.test[:config.split_rows], out / figures[-1], level,
                             config.split_resamples, config.split_temperature)
    result["figures"] = figures
    return result


# ------------------------------------------------------------------------------------------------------ report
def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def results_markdown(results: Mapping[str, Mapping[str, Any]], reference: Mapping[str, Any],
                     profile: str, smoke: bool) -> str:
    """A Markdown results table: one row per model (``results[name]`` as written by flow-eval, plus
    ``train_seconds`` and ``train_hardware``) beside the reference figures.

    ``reference``: ``title``, ``models`` ({name: {test_bpd, parameters}}) for the reference implementation's
    numbers of the same models, and ``literature`` ({method: test bits/dim}).
    """
    ref_models = reference.get("models", {})
    first = next(iter(results.values()), {})
    k = first.get("n_samples", "K")
    title = reference.get("title", "Flow benchmark")
    lines = [f"# {title}: profile `{profile}`", ""]
    if smoke:
        lines += ["**SMOKE RUN**: tiny data subsets, narrow sub-networks and a few hundred steps; these numbers only "
                  "show that the pipeline works and are not comparable with the reference figures.", ""]
    lines += [
        f"| Model | Val bits/dim | Test bits/dim | Reference test bits/dim | Parameters | Reference parameters "
        f"| Inference ms / {first.get('batch_size', 64)} | Sampling ms / {first.get('batch_size', 64)} "
        "| Training time | Hardware |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        ref = ref_models.get(name, {})
        hardware = ", ".join(r.get("train_hardware", []))
        if r.get("device") and r["device"] not in hardware:
            hardware += f"; timings: {r['device']}"
        cells = [f"{name} (smoke)" if smoke else name, _number(r.get("val_bpd")), _number(r.get("test_bpd")),
                 _number(ref.get("test_bpd")), _number(r.get("parameters")), _number(ref.get("parameters")),
                 _number(r.get("inference_ms"), 1), _number(r.get("sampling_ms"), 1),
                 _duration(r.get("train_seconds", 0.0)), hardware]
        lines.append("| " + " | ".join(cells) + " |")
    literature = reference.get("literature", {})
    if literature:
        lines += ["", "Published test bits/dim: " + ", ".join(f"{m} {v}" for m, v in literature.items()) + "."]
    lines += ["", f"Bits/dim are importance-weighted lower bounds with K = {k} dequantization draws per image "
              f"(val: {first.get('n_val', '?')} images, test: {first.get('n_test', '?')} images). Inference: one "
              "bits/dim pass (one draw) over a test batch; sampling: drawing a batch at temperature 1; median of "
              "repeated runs in fp32 after a warm-up. Training time: wall time summed over resumed sessions.", ""]
    return "\n".join(lines)
