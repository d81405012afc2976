"""Flows on 8-bit image datasets, unconditional or conditioned on the class label: data, model layouts, training,
bits/dim evaluation, timing and figures. Shared by the MNIST and CIFAR-10 benchmarks (pipelines/mnist,
pipelines/cifar10) and any other labelled (C, H, W) 8-bit image dataset registered in :data:`IMAGE_DATASETS`.

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
      - {channel: 3, actnorm: true}                                      # ActNorm before each coupling (RealNVP
                                                                         # with ActNorm in place of batch norm)
      - {checkerboard: 2, packed: true}                                  # sub-networks on the packed half-width
                                                                         # image of the kept pixels (half the work)

Consecutive couplings alternate their mask parity; log-scales are ``scale_bound * tanh(raw / scale_bound)``; the
last latent gets a standard normal prior.

Class-conditional layouts add ``condition: {classes: 10, features: 16}``: a :class:`LabelEncoder` embeds the label
into ``features`` constant channels at every scale; every coupling, every ``split: conditional`` prior and the prior
of the last latent see them, and each Glow step gets an affine injector (SRFlow's step: ActNorm, 1x1 conv,
injector, coupling). Its likelihood is the conditional one, log p(x | label).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pa_recon.bench.runs import count_parameters, device_of, median_seconds
from pa_recon.checks import check_count
from pa_recon.data.cifar import load_cifar10
from pa_recon.data.mnist import load_mnist
from pa_recon.errors import PAReconError
from pa_recon.flows import (
    ActNorm,
    AffineCoupling,
    AffineInjector,
    Flow,
    GaussianPrior,
    InvConv1x1,
    LabelEncoder,
    LogitTransform,
    Split,
    Squeeze,
    SubnetConfig,
    UniformDequantization,
    VariationalDequantization,
    one_hot_condition,
)
from pa_recon.flows.base import Shape
from pa_recon.flows.coupling import Mask
from pa_recon.flows.model import conditional_scales
from pa_recon.train.checkpoint import inference_state_dict, load_checkpoint
from pa_recon.train.config import TrainConfig
from pa_recon.train.runs import fit_recorded, hardware_name, open_run, read_run
from pa_recon.train.trainer import Trainer, save_image_grid

# ------------------------------------------------------------------------------------------------------- data
SPLITS = ("train", "val", "test")


def _mnist(root: Path, split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_mnist(root, split)
    return images[:, None], labels


IMAGE_DATASETS: dict[str, Callable[[Path, Literal["train", "test"]], tuple[np.ndarray, np.ndarray]]] = {
    "mnist": _mnist, "cifar10": load_cifar10}
"""Dataset name -> reader of one file split ("train" or "test") from a path: uint8 images (N, C, H, W) and integer
class labels (N,)."""


@dataclass(frozen=True)
class ImageSplits:
    """uint8 images (N, C, H, W) and int64 class labels (N,) of the training, validation and test splits."""

    train: Tensor
    val: Tensor
    test: Tensor
    train_labels: Tensor
    val_labels: Tensor
    test_labels: Tensor

    @property
    def shape(self) -> Shape:
        """Per-image shape (C, H, W)."""
        c, h, w = self.train.shape[1:]
        return c, h, w

    def labelled(self, split: str) -> tuple[Tensor, Tensor]:
        """(images, labels) of ``split`` ("train", "val" or "test")."""
        return getattr(self, split), getattr(self, f"{split}_labels")


def load_image_splits(dataset: str, root: str | os.PathLike[str], val_size: int,
                      subset: Mapping[str, int] | None = None, shuffle_seed: int | None = None) -> ImageSplits:
    """Read ``dataset`` from ``root``; the last ``val_size`` training images become the validation set.

    ``shuffle_seed``: when given, the training images (before the validation images are split off) and the test
    images are first put in a random order drawn with this seed. Files sorted by class (the CIFAR-10 JPEG copy) need
    it, so that the validation set and subsets hold every class. ``subset`` ({"train": n, "val": n, "test": n}, any
    of them) then keeps the first n images of a split (smoke runs); n may not exceed the split's size (field
    ``subset.<split>`` of the error).
    """
    if dataset not in IMAGE_DATASETS:
        raise PAReconError(f"unknown dataset; known: {sorted(IMAGE_DATASETS)}", field="dataset")
    files = {}
    for split in ("train", "test"):
        images, labels = IMAGE_DATASETS[dataset](Path(root), split)
        if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != images.shape[:1]:
            raise PAReconError(f"the reader returned {images.dtype} images {images.shape} and labels {labels.shape}",
                               field="dataset")
        pair = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))
        if shuffle_seed is not None:
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(shuffle_seed))
            pair = pair[0][order], pair[1][order]
        files[split] = pair
    n_train = files["train"][1].shape[0]
    if not 0 < val_size < n_train:
        raise PAReconError(f"must lie in 1 … {n_train - 1}, got {val_size}", field="val_size")
    (images, labels), test = files["train"], files["test"]
    splits = {"train": (images[:-val_size], labels[:-val_size]), "val": (images[-val_size:], labels[-val_size:]),
              "test": test}
    for name, n in (subset or {}).items():
        if name not in splits:
            raise PAReconError(f"expected a positive image count for train, val or test, got {name}: {n!r}",
                               field="subset")
        n = check_count(n, f"subset.{name}", minimum=1, maximum=len(splits[name][1]))
        splits[name] = splits[name][0][:n], splits[name][1][:n]
    return ImageSplits(**{name: splits[name][0] for name in SPLITS},
                       **{f"{name}_labels": splits[name][1] for name in SPLITS})


# ----------------------------------------------------------------------------------------------------- models
_LAYOUT_KEYS = {"layers", "dequantization", "logit_alpha", "scale_bound", "n_bits", "condition"}
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


def _layer(entry: Any, shape: Shape, override: SubnetConfig | None, bound: float, cond: int,
           field: str) -> tuple[list[nn.Module], Shape]:
    """The modules of one ``layers`` entry at input shape (C, H, W), and the shape after them; ``cond``: condition
    feature channels (0: unconditional)."""
    c, h, w = shape
    if entry == "squeeze":
        if h % 2 or w % 2:
            raise PAReconError(f"cannot squeeze an odd size {(h, w)}", field=field)
        return [Squeeze()], (4 * c, h // 2, w // 2)
    if entry == "split":
        entry = {"split": "standard"}
    kinds = {"checkerboard", "channel", "glow", "split"} & set(entry if isinstance(entry, Mapping) else ())
    options = {"subnet"} | ({"actnorm"} if kinds & {"checkerboard", "channel"} else set()) | (
        {"packed"} if "checkerboard" in kinds else set())
    if len(kinds) != 1 or not set(entry) <= kinds | options:
        raise PAReconError("expected squeeze, split or one of {checkerboard: …, subnet: …, actnorm: …, packed: …}, "
                           f"{{channel: …, subnet: …, actnorm: …}}, {{glow|split: …, subnet: …}}, got {entry!r}",
                           field=field)
    (kind,) = kinds
    subnet = _subnet(entry.get("subnet"), override, f"{field}.subnet")
    if kind == "split":
        if entry["split"] not in ("standard", "conditional"):
            raise PAReconError(f"split prior must be standard or conditional, got {entry['split']!r}", field=field)
        split = Split(c, entry["split"], cond, subnet)
        return [split], (split.n_kept, h, w)
    n = check_count(entry[kind], f"{field}.{kind}", minimum=1)
    for option in ("actnorm", "packed"):
        if not isinstance(entry.get(option, False), bool):
            raise PAReconError(f"expected true or false, got {entry[option]!r}", field=f"{field}.{option}")
    mask: Mask = "channel"
    if kind == "checkerboard":
        mask = "checkerboard_packed" if entry.get("packed", False) else "checkerboard"
    modules: list[nn.Module] = []
    for i in range(n):
        if kind == "glow":
            modules += [ActNorm(c), InvConv1x1(c)] + ([AffineInjector(c, cond, subnet)] if cond else [])
        elif entry.get("actnorm", False):
            modules.append(ActNorm(c))
        modules.append(AffineCoupling(c, mask, i % 2, subnet, cond, "tanh", bound))
    return modules, shape


def _condition(values: Any) -> tuple[int, int, Any]:
    """(classes, features, prior sub-network settings) of a layout's ``condition`` section; (0, 0, None) without
    one."""
    if values is None:
        return 0, 0, None
    if not isinstance(values, Mapping) or not {"classes", "features"} <= set(values) <= {"classes", "features",
                                                                                          "subnet"}:
        raise PAReconError(f"expected {{classes: n, features: n, subnet: … (optional)}}, got {values!r}",
                           field="condition")
    return (check_count(values["classes"], "condition.classes", minimum=1),
            check_count(values["features"], "condition.features", minimum=1),
            values.get("subnet"))


def build_image_flow(layout: Mapping[str, Any], shape: Shape, subnet: SubnetConfig | None = None) -> Flow:
    """The flow a layout mapping describes (see the module docstring) for images of shape (C, H, W).

    ``subnet``, when given, replaces every sub-network of the layout (couplings, injectors, learned priors and the
    variational dequantizer): smoke runs keep an architecture's structure but shrink its width.
    """
    unknown = sorted(set(layout) - _LAYOUT_KEYS)
    if unknown or "layers" not in layout:
        raise PAReconError(f"a layout needs 'layers' and may set {sorted(_LAYOUT_KEYS - {'layers'})}; "
                           f"unknown: {unknown}", field="layers" if not unknown else unknown[0])
    n_bits = int(layout.get("n_bits", 8))
    bound = float(layout.get("scale_bound", 2.0))
    classes, features, prior_subnet = _condition(layout.get("condition"))
    dequant = dict(layout.get("dequantization") or {"kind": "uniform"})
    if not set(dequant) <= _DEQUANT_KEYS or dequant.get("kind") not in ("uniform", "variational"):
        raise PAReconError(f"expected kind uniform or variational and optional {sorted(_DEQUANT_KEYS - {'kind'})}, "
                           f"got {dequant}", field="dequantization")
    dequantizer: UniformDequantization
    if dequant["kind"] == "uniform":
        dequantizer = UniformDequantization(n_bits)
    else:
        dequantizer = VariationalDequantization(
            shape[0], n_bits, check_count(dequant.get("steps", 4), "dequantization.steps", minimum=1),
            _subnet(dequant.get("subnet"), subnet, "dequantization.subnet"),
            check_count(dequant.get("features", 16), "dequantization.features", minimum=1))
    modules: list[nn.Module] = []
    alpha = layout.get("logit_alpha", 1e-5)
    if alpha is not None:
        modules.append(LogitTransform(float(alpha), shape[0]))
    current = shape
    for i, entry in enumerate(layout["layers"]):
        added, current = _layer(entry, current, subnet, bound, features, f"layers[{i}]")
        modules += added
    prior = GaussianPrior(current[0], features, _subnet(prior_subnet, subnet, "condition.subnet"))
    encoder = None
    if classes:
        encoder = LabelEncoder(classes, features, conditional_scales(modules, prior), (shape[1], shape[2]))
    return Flow(modules, prior, shape, encoder=encoder, dequantization=dequantizer)


def n_classes(model: Flow) -> int:
    """The number of classes of a class-conditional flow; 0 for an unconditional one."""
    return model.encoder.in_channels if isinstance(model.encoder, LabelEncoder) else 0


def label_condition(model: Flow, labels: Tensor) -> Tensor | None:
    """The condition of class labels (B,) for a class-conditional flow (one-hot, on the model's device); None for an
    unconditional flow, which ignores labels."""
    k = n_classes(model)
    return one_hot_condition(labels.to(device_of(model)), k) if k else None


# -------------------------------------------------------------------------------------------------- likelihood
def bits_per_dim_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Trainer loss: mean bits/dim of integer images (B, C, H, W) with labels (B,) under one dequantization draw,
    conditioned on the labels for a class-conditional flow."""
    flow = cast(Flow, model)
    x, labels = batch
    return flow.bits_per_dim(x.float(), label_condition(flow, labels)).mean(), {}


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
def evaluate_bits_per_dim(model: Flow, images: Tensor, labels: Tensor, n_samples: int = 8, batch_size: int = 64,
                          progress: bool = False) -> BitsPerDim:
    """Bits/dim of integer images (N, C, H, W) with labels (N,) (used by class-conditional flows) on the model's
    device, ``batch_size`` images (each drawn ``n_samples`` times) per forward pass."""
    device = device_of(model)
    sums = torch.zeros(2, dtype=torch.float64)
    for start in tqdm(range(0, images.shape[0], batch_size), desc="bits/dim", disable=not progress):
        x = images[start:start + batch_size].to(device).float()
        cond = label_condition(model, labels[start:start + batch_size])
        bounds = bits_per_dim_bounds(model.log_weights(x, cond, n_samples=n_samples), x[0].numel())
        sums += torch.stack([b.sum() for b in bounds]).cpu()
    n = images.shape[0]
    return BitsPerDim(float(sums[0]) / n, float(sums[1]) / n, n_samples, n)


# ----------------------------------------------------------------------------------------------------- figures
def _pixels(model: Flow, x: Tensor) -> Tensor:
    """Integer images -> [0, 1] for PNG grids."""
    assert model.dequantization is not None
    return x.float() / (model.dequantization.levels - 1)


def sample_grid(model: Flow, n: int, temperature: float = 1.0) -> tuple[Tensor, int | None]:
    """About ``n`` samples in [0, 1] for a grid, and the grid's row length (None: the grid's default). A
    class-conditional flow draws ``max(1, n // classes)`` samples of each class, one row per class; an unconditional
    one draws n."""
    k = n_classes(model)
    if not k:
        return _pixels(model, model.sample(n, temperature=temperature)), None
    per_class = max(1, n // k)
    labels = torch.arange(k).repeat_interleave(per_class)
    return _pixels(model, model.sample(labels.numel(), label_condition(model, labels), temperature)), per_class


@torch.no_grad()
def save_samples(model: Flow, path: str | Path, n: int = 64, temperature: float = 1.0) -> None:
    """A PNG grid of about ``n`` samples (see :func:`sample_grid`) drawn with the prior's standard deviations scaled
    by ``temperature``."""
    images, nrow = sample_grid(model, n, temperature)
    save_image_grid(images, path, nrow=nrow)


def same_class_pairs(labels: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Indices (a, b), each (P,) with P ≤ n: disjoint pairs of items with equal labels, in order of first item."""
    first: dict[int, int] = {}
    a, b = [], []
    for i, label in enumerate(labels.tolist()):
        if label in first:
            a.append(first.pop(label))
            b.append(i)
            if len(a) == n:
                break
        else:
            first[label] = i
    return torch.tensor(a, dtype=torch.long), torch.tensor(b, dtype=torch.long)


@torch.no_grad()
def save_interpolations(model: Flow, x_a: Tensor, x_b: Tensor, path: str | Path, steps: int = 10,
                        labels: Tensor | None = None) -> None:
    """A PNG with one row per pair (x_a[i], x_b[i]) of integer images (P, C, H, W): ``steps`` decodings along the
    straight line between their latents (end points included); a class-conditional flow encodes and decodes both
    under ``labels`` (P,)."""
    device = device_of(model)
    cond = None if labels is None else label_condition(model, labels)
    path_images = model.interpolate(x_a.to(device).float(), x_b.to(device).float(), steps, cond)
    save_image_grid(_pixels(model, path_images.transpose(0, 1).flatten(0, 1)), path, nrow=steps)


@torch.no_grad()
def save_split_resamples(model: Flow, x: Tensor, path: str | Path, resampled: int, n: int = 8,
                         temperature: float = 1.0, labels: Tensor | None = None) -> None:
    """A PNG with one row per integer image of x (B, C, H, W): the image, then ``n`` decodings in which the first
    ``resampled`` (finest) split latents are drawn afresh from their priors and the later latents are kept (under
    the images' ``labels`` (B,) for a class-conditional flow)."""
    if not 1 <= resampled < len(model.latent_shapes):
        raise PAReconError(f"this flow has {len(model.latent_shapes) - 1} split latent(s), cannot resample "
                           f"{resampled}", field="resampled")
    assert model.dequantization is not None
    x = x.to(device_of(model)).float()
    cond = None if labels is None else label_condition(model, labels)
    kept = model.encode(x, cond)[resampled:]
    columns = [x]
    for _ in range(n):
        latents: list[Tensor | None] = [None] * resampled
        y = model.inverse([*latents, *kept], cond, temperature=temperature).y
        columns.append(model.dequantization.quantize(y))
    save_image_grid(_pixels(model, torch.stack(columns, dim=1).flatten(0, 1)), path, nrow=n + 1)


@torch.no_grad()
def label_swap(model: Flow, x: Tensor, labels: Tensor) -> Tensor:
    """Style transfer of a class-conditional flow: integer images x (B, C, H, W) encoded under their labels (B,),
    then decoded under every class: (B, classes, C, H, W), integers."""
    k = n_classes(model)
    if not k:
        raise PAReconError("label swap needs a class-conditional flow", field="condition")
    device = device_of(model)
    x = x.to(device).float()
    latents = model.encode(x, label_condition(model, labels))
    b = x.shape[0]
    targets = torch.arange(k).repeat(b)  # image-major: image 0 under classes 0 … k-1, image 1, …
    decoded = model.decode([z.repeat_interleave(k, dim=0) for z in latents], label_condition(model, targets))
    return decoded.view(b, k, *x.shape[1:])


def save_label_swap(model: Flow, x: Tensor, labels: Tensor, path: str | Path) -> None:
    """A PNG with one row per image of x (B, C, H, W): the image, then its :func:`label_swap` decodings under
    classes 0 … K − 1."""
    swapped = label_swap(model, x, labels)
    rows = torch.cat([x.to(swapped.device).float()[:, None], swapped], dim=1)
    save_image_grid(_pixels(model, rows.flatten(0, 1)), path, nrow=rows.shape[1])


# ------------------------------------------------------------------------------------------------------ training
def train_image_flow(layout: Mapping[str, Any], config: TrainConfig, splits: ImageSplits,
                     subnet: SubnetConfig | None = None, settings: Mapping[str, Any] | None = None,
                     extra_params: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Train the flow of ``layout`` on ``splits`` by bits/dim into ``config.out_dir``; returns the final metrics.

    The folder gets the trainer's files (``last.pt``, ``best.pt``, ``samples/``) and ``run.json`` (see
    :func:`pa_recon.train.runs.open_run`): its ``settings`` hold ``layout``, ``subnet``, ``shape``, the training
    options that shape the result and the caller's ``settings`` (e.g. the data selection). A folder trained with the
    same settings is resumed (from ``last.pt``, also after a finished run, which then returns at once); one trained
    with other settings is cleared first.
    """
    torch.manual_seed(config.seed)
    model = build_image_flow(layout, splits.shape, subnet)  # before open_run, so a bad layout clears no earlier run
    record = open_run(config, {"layout": dict(layout), "subnet": None if subnet is None else vars(subnet),
                               "shape": list(splits.shape), **(settings or {})})

    def draw(flow: nn.Module) -> Tensor:
        return sample_grid(cast(Flow, flow), 64)[0]

    return fit_recorded(config, record, bits_per_dim_loss, lambda loss: Trainer(
        model, config, loss, splits.labelled("train"), splits.labelled("val"), sample_fn=draw,
        extra_params={"layout": dict(layout), **(extra_params or {})}))


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


# ---------------------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings: ``n_samples`` dequantization draws per image (importance sampling), ``batch_size``
    images per pass (and per timing), ``timing_repeats``; figures: sample grids of about ``grid_size`` images at each
    of ``temperatures`` (class-conditional flows: one row per class), ``interpolation_pairs`` rows of
    ``interpolation_steps`` images (class-conditional flows: pairs of one class), ``split_rows`` rows of
    ``split_resamples`` re-drawn early-split latents at ``split_temperature``, ``swap_rows`` label-swap rows
    (class-conditional flows); ``seed``; ``device``."""

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
    swap_rows: int = 6
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


def _figures(model: Flow, splits: ImageSplits, config: EvalConfig, out: Path) -> list[str]:
    """Write the evaluation figures into ``out``; their file names."""
    figures = []
    for t in config.temperatures:
        torch.manual_seed(config.seed)
        figures.append(f"samples_T{t:.2f}.png")
        save_samples(model, out / figures[-1], config.grid_size, t)
    test, labels = splits.labelled("test")
    conditional = n_classes(model) > 0
    if conditional:
        a, b = same_class_pairs(labels, config.interpolation_pairs)
    else:
        n_pairs = min(config.interpolation_pairs, test.shape[0] // 2)
        a, b = torch.arange(n_pairs), torch.arange(n_pairs, 2 * n_pairs)
    if a.numel():
        figures.append("interpolation.png")
        save_interpolations(model, test[a], test[b], out / figures[-1], config.interpolation_steps,
                            labels[a] if conditional else None)
    rows = slice(0, config.split_rows)
    for level in range(1, len(model.latent_shapes)):
        torch.manual_seed(config.seed)
        figures.append(f"split_resample_level{level}.png")
        save_split_resamples(model, test[rows], out / figures[-1], level, config.split_resamples,
                             config.split_temperature, labels[rows] if conditional else None)
    if conditional and config.swap_rows:
        figures.append("label_swap.png")
        save_label_swap(model, test[:config.swap_rows], labels[:config.swap_rows], out / figures[-1])
    return figures


def evaluate_image_flow(model: Flow, splits: ImageSplits, config: EvalConfig, out_dir: str | Path,
                        progress: bool = True) -> dict[str, Any]:
    """Bits/dim on the validation and test images (class-conditional flows: log p(x | label)), timings, parameter
    count and figures (PNG in ``out_dir``).

    Returns ``val_bpd`` / ``test_bpd`` (importance-weighted, ``n_samples`` draws), ``val_bpd_single_draw`` /
    ``test_bpd_single_draw``, ``inference_ms`` (one bits/dim pass, one draw, ``batch_size`` test images),
    ``sampling_ms`` (``batch_size`` samples at temperature 1), ``parameters``, ``conditional`` (the number of
    classes; 0: unconditional), ``n_samples``, ``batch_size``, ``n_val``, ``n_test``, ``device`` and the names of the
    figure files. Timings are fp32.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = device_of(model)
    torch.manual_seed(config.seed)
    result: dict[str, Any] = {"parameters": count_parameters(model), "conditional": n_classes(model),
                              "n_samples": config.n_samples, "batch_size": config.batch_size,
                              "device": hardware_name(device)}
    for name in ("val", "test"):
        images, labels = splits.labelled(name)
        bpd = evaluate_bits_per_dim(model, images, labels, config.n_samples, config.batch_size, progress)
        result.update({f"{name}_bpd": bpd.importance, f"{name}_bpd_single_draw": bpd.single_draw,
                       f"n_{name}": bpd.n_images})
    test, labels = splits.labelled("test")
    batch, cond = test[:config.batch_size].to(device).float(), label_condition(model, labels[:config.batch_size])
    sample_cond = label_condition(model, torch.arange(config.batch_size) % max(1, n_classes(model)))
    with torch.no_grad():
        result["inference_ms"] = 1e3 * median_seconds(lambda: model.bits_per_dim(batch, cond), device,
                                                      config.timing_repeats)
        result["sampling_ms"] = 1e3 * median_seconds(lambda: model.sample(config.batch_size, sample_cond), device,
                                                     config.timing_repeats)
    result["figures"] = _figures(model, splits, config, out)
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
    numbers of the same models, ``literature`` ({method: test bits/dim}) and an optional ``note`` printed under the
    table (e.g. why the figures are not comparable). Class-conditional models are marked; their bits/dim are of
    the image given its label.
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
        label = f"{name} (class-conditional)" if r.get("conditional") else name
        cells = [f"{label} (smoke)" if smoke else label, _number(r.get("val_bpd")), _number(r.get("test_bpd")),
                 _number(ref.get("test_bpd")), _number(r.get("parameters")), _number(ref.get("parameters")),
                 _number(r.get("inference_ms"), 1), _number(r.get("sampling_ms"), 1),
                 _duration(r.get("train_seconds", 0.0)), hardware]
        lines.append("| " + " | ".join(cells) + " |")
    literature = reference.get("literature", {})
    if literature:
        lines += ["", "Published test bits/dim: " + ", ".join(f"{m} {v}" for m, v in literature.items()) + "."]
    if reference.get("note"):
        lines += ["", str(reference["note"]).strip()]
    lines += ["", f"Bits/dim are importance-weighted estimates with K = {k} dequantization draws per image, "
              "upper bounds on the model's discrete bits/dim in expectation "
              f"(val: {first.get('n_val', '?')} images, test: {first.get('n_test', '?')} images). Inference: one "
              "bits/dim pass (one draw) over a test batch; sampling: drawing a batch at temperature 1; median of "
              "repeated runs in fp32 after a warm-up. Training time: wall time summed over resumed sessions.", ""]
    return "\n".join(lines)
