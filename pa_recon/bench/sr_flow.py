"""×s super-resolution with a conditional flow (the SRFlow design) and its L1 regression baseline: models,
losses, training patches, full-image inference, the Set5/Set14 evaluation and the comparison figure.

Models. :class:`SRFlow` is a conditional Glow p(HR | LR) built by :func:`pa_recon.flows.build_flow`: ``levels``
× (squeeze, ``steps`` × (ActNorm, invertible 1×1 conv, affine injector, conditional affine coupling), split),
learned conditional split priors, and a condition encoder — an RRDB trunk on the LR image (``encoder: rrdb``) or
a UNet on its bicubic ×s up-sampling (``encoder: unet``). :class:`SRRegressor` is the regression baseline: the same
encoder, asked for one feature map at the HR size, a two-convolution head, and a global residual onto the bicubic
up-sampled LR; it is trained with the L1 loss. The flow's encoder can start from the trained regressor's weights
(SRFlow pre-trains its RRDB the same way).

Data. HR patches and their LR versions come from :class:`pa_recon.data.sr_images.PatchSampler` (MATLAB-convention
bicubic ×1/s, rounded to 8 bits, random flips/rotations) and are kept as uint8 tensors ``(N, 3, P, P)`` and
``(N, 3, P/s, P/s)``. Model inputs: LR as float in [0, 1]; the flow scores HR as integer levels 0 … 255.

Likelihood and bits/dim. The flow models y = (x + u)/256 in [0, 1)³ᴴᵂ, x the 8-bit HR levels, u ~ U[0, 1)³ᴴᵂ
(uniform dequantization, noise of one 8-bit level, 1/256 on the [0, 1] scale) — with ``residual: true`` it models
y − bicubic(LR) instead, a shift fixed by the condition (log-det 0) that makes the τ = 0 output of a fresh flow
about the bicubic image. The training loss is the dequantization bound in bits per HR sub-pixel,
``−log₂ P(x | LR) / (3·H·W) = −log₂ p(y | LR)/(3·H·W) + 8``. Samples are quantised back, x = ⌊256·y⌋ clipped to
0 … 255, and shown as x/255.

Arbitrary image sizes. The flow needs HR sizes divisible by 2^levels, so an LR image is padded at the bottom and
right by repeating its edge pixels (replicate padding) to the next multiple of :attr:`SRFlow.lr_multiple`, super-
resolved, and the output cropped back to s·h × s·w (:func:`pad_to_multiple`). Tiling is not needed: memory grows
linearly with the image and a 768×512 HR output fits easily in CPU or GPU memory.

Evaluation (:func:`evaluate_methods`): each method maps an LR image to one or more SR outputs; every output is
scored by :mod:`pa_recon.sr_eval` (Y-channel PSNR/SSIM with an s-pixel shave and the grey rule, full-image RGB
PSNR/SSIM as in SRFlow, LR-PSNR), metrics are averaged over the outputs and then over the images, and the diversity
(per-pixel std over samples, 8-bit levels) is reported for methods with several outputs.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from pa_recon import sr_eval
from pa_recon.bench.runs import count_parameters
from pa_recon.checks import check_count, check_number
from pa_recon.data.sr_images import (
    PatchSampler,
    downscale,
    is_greyscale,
    list_images,
    modcrop,
    read_image,
    read_image_folder,
    to_uint8,
    upscale,
)
from pa_recon.errors import PAReconError
from pa_recon.flows import FlowConfig, RRDBEncoder, UNetEncoder, UniformDequantization, build_flow
from pa_recon.train.checkpoint import inference_state_dict, load_checkpoint
from pa_recon.train.config import TrainConfig
from pa_recon.train.runs import RUN_FILE, fit_recorded, open_run, read_run
from pa_recon.train.trainer import LossFn, Trainer

Kind = Literal["flow", "regression"]
LEVELS = 256
"""8-bit data: the flow's dequantizer divides by 256; images are shown as levels / 255."""
SET_BENCHMARK_KEYS = ("shape", "cond_channels", "cond_upscale", "dequantization", "n_bits", "architecture")
"""FlowConfig fields the SR benchmark sets itself: a continuous conditional Glow on RGB, conditioned on the LR image
(the 8-bit dequantization is done by :class:`SRFlow`, outside the flow)."""
METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lr_psnr")


# ------------------------------------------------------------------------------------------------------- data
def load_training_images(root: str | os.PathLike[str], folders: Sequence[str]) -> list[np.ndarray]:
    """Every image of ``root/folder`` for each folder, uint8 RGB ``(H, W, 3)``, folders in order, files sorted."""
    return [img for folder in folders for img in read_image_folder(Path(root) / folder).values()]


def make_patch_pairs(images: Sequence[np.ndarray], scale: int, patch_size: int, count: int,
                     seed: int) -> tuple[Tensor, Tensor]:
    """``count`` aligned training pairs: HR uint8 ``(count, 3, P, P)`` and LR uint8 ``(count, 3, P/s, P/s)``,
    P = ``patch_size``, s = ``scale``, drawn by a :class:`PatchSampler` seeded with ``seed`` (augmented)."""
    if count < 1:
        raise PAReconError(f"expected a positive patch count, got {count}", field="patches")
    hr, lr = PatchSampler(images, scale, patch_size, seed=seed).sample(count)
    return torch.from_numpy(hr), torch.from_numpy(lr)


@dataclass(frozen=True)
class EvalImage:
    """One test image: ``name``, the HR image modcropped to the scale (uint8 ``(H, W, 3)``), its LR input
    (bicubic ×1/s rounded to 8 bits, uint8 ``(H/s, W/s, 3)``) and ``grey`` (stored as one grey channel)."""

    name: str
    hr: np.ndarray
    lr: np.ndarray
    grey: bool


def load_test_set(folder: str | os.PathLike[str], scale: int) -> list[EvalImage]:
    """The images of an SR test folder (Set5, Set14) prepared by the standard protocol."""
    images = []
    for path in list_images(folder):
        hr = np.ascontiguousarray(modcrop(read_image(path), scale))
        images.append(EvalImage(path.stem, hr, to_uint8(downscale(hr / 255.0, scale)), is_greyscale(path)))
    return images


# ----------------------------------------------------------------------------------------------------- models
def flow_config(settings: Mapping[str, Any], scale: int, patch_size: int) -> FlowConfig:
    """The conditional Glow of a ``model.flow`` params section (FlowConfig fields except
    :data:`SET_BENCHMARK_KEYS`) for HR patches ``(3, patch_size, patch_size)`` and an LR condition ×1/``scale``."""
    fixed = sorted(set(settings) & set(SET_BENCHMARK_KEYS))
    if fixed:
        raise PAReconError(f"{fixed} are set by the SR benchmark", field=f"flow.{fixed[0]}")
    values = dict(settings)
    rrdb = values.get("encoder", "unet") == "rrdb"
    values.update(shape=(3, patch_size, patch_size), architecture="glow", cond_channels=3,
                  cond_upscale=scale if rrdb else 1, dequantization="none")
    try:
        return FlowConfig.from_dict(values)
    except PAReconError as err:
        raise err.under("flow") from None


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """``x`` (B, C, h, w) padded at the bottom and right with copies of its edge pixels to the next multiples of
    ``multiple``; ``x`` itself when both already are. ``pad_to_multiple(x, m)[..., :h, :w]`` is ``x``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


class _SRModel(nn.Module):
    """What the flow and the regressor share: the ×``scale`` factor, the encoder kind and the LR-size multiple."""

    def __init__(self, config: FlowConfig, scale: int) -> None:
        super().__init__()
        if scale < 1:
            raise PAReconError(f"scale must be a positive integer, got {scale}", field="scale")
        self.scale, self.encoder_kind = scale, config.encoder
        depth = 2 ** max(config.levels, config.encoder_depth or 0)
        self.lr_multiple = depth // math.gcd(depth, scale)
        """LR heights and widths must be multiples of this (so that HR sizes are multiples of 2^levels)."""

    def condition(self, lr: Tensor) -> Tensor:
        """The encoder's input for LR images (B, 3, h, w) in [0, 1]: the LR image itself (RRDB), or its bicubic
        ×scale up-sampling (B, 3, s·h, s·w) (UNet, which works at the HR size)."""
        if self.encoder_kind == "rrdb":
            return lr
        return F.interpolate(lr, scale_factor=float(self.scale), mode="bicubic", align_corners=False)


class SRFlow(_SRModel):
    """p(HR | LR) for ×``scale`` SR: a conditional Glow on dequantized 8-bit HR images y (see the module docstring),
    or with ``residual`` on y minus the bicubic ×scale LR (torch's bicubic), a volume-preserving shift fixed by the
    condition, so that a fresh flow already decodes τ = 0 to about the bicubic image."""

    def __init__(self, config: FlowConfig, scale: int, residual: bool = False) -> None:
        super().__init__(config, scale)
        if config.cond_channels != 3 or config.dequantization != "none":
            raise PAReconError("an SR flow is conditioned on an RGB image and dequantizes 8-bit data itself; "
                               "build its config with flow_config()", field="flow")
        self.residual = residual
        self.dequantizer = UniformDequantization(8)
        self.flow = build_flow(config)

    def base(self, lr: Tensor) -> Tensor:
        """What the flow's input is relative to, (B, 3, s·h, s·w): the bicubic ×scale LR images (B, 3, h, w), or
        zeros without ``residual``."""
        up = F.interpolate(lr, scale_factor=float(self.scale), mode="bicubic", align_corners=False)
        return up if self.residual else torch.zeros_like(up)

    def forward(self, hr: Tensor, lr: Tensor) -> Tensor:
        """log P(hr | lr) in nats, (B,): the uniform-dequantization bound for integer HR levels (B, 3, s·h, s·w)
        given LR images (B, 3, h, w) in [0, 1] (h, w multiples of :attr:`lr_multiple`)."""
        y, log_weight = self.dequantizer(hr)
        return self.flow.log_prob(y - self.base(lr), self.condition(lr)) + log_weight

    def sample(self, lr: Tensor, n: int = 1, temperature: float = 1.0) -> Tensor:
        """``n`` SR samples (n, 3, s·h, s·w) in [0, 1] (multiples of 1/255) for ONE LR image (1, 3, h, w) in
        [0, 1] of any size; ``temperature`` scales every prior's standard deviation (0: the priors' means)."""
        if lr.ndim != 4 or lr.shape[0] != 1:
            raise PAReconError(f"expected one LR image (1, 3, h, w), got shape {tuple(lr.shape)}", field="lr")
        h, w = lr.shape[-2:]
        lr = pad_to_multiple(lr, self.lr_multiple)
        feats = list(self.flow.features(self.condition(lr), 1).values())
        draws = torch.cat([self.flow.sample(1, feats, temperature) for _ in range(n)])
        x = self.dequantizer.quantize(draws + self.base(lr))
        return x[..., : self.scale * h, : self.scale * w] / (LEVELS - 1)


class SRRegressor(_SRModel):
    """The regression baseline: the flow's encoder (one feature map of ``cond_features`` channels at the HR size),
    a head conv3×3 → LeakyReLU → conv3×3 with ``head_hidden`` channels, plus the bicubic ×scale LR (torch's
    bicubic, a = −0.75); LR (B, 3, h, w) in [0, 1] → HR (B, 3, s·h, s·w), unclipped."""

    def __init__(self, config: FlowConfig, scale: int, head_hidden: int = 32) -> None:
        super().__init__(config, scale)
        self.encoder: RRDBEncoder | UNetEncoder
        if config.encoder == "rrdb":
            self.encoder = RRDBEncoder(3, config.cond_features, [0], config.encoder_width, config.encoder_blocks,
                                       upscale=scale)
        else:
            self.encoder = UNetEncoder(3, config.cond_features, [0], config.encoder_width,
                                       config.encoder_depth or config.levels, config.encoder_blocks)
        self.head = nn.Sequential(nn.Conv2d(config.cond_features, head_hidden, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(head_hidden, 3, 3, padding=1))

    def forward(self, lr: Tensor) -> Tensor:
        up = F.interpolate(lr, scale_factor=float(self.scale), mode="bicubic", align_corners=False)
        (features,) = self.encoder(self.condition(lr))
        return up + self.head(features)

    def predict(self, lr: Tensor) -> Tensor:
        """The SR image (B, 3, s·h, s·w) in [0, 1] of LR images (B, 3, h, w) in [0, 1] of any size."""
        h, w = lr.shape[-2:]
        return self(pad_to_multiple(lr, self.lr_multiple))[..., : self.scale * h, : self.scale * w].clamp(0, 1)


def build_sr_model(kind: Kind, model: Mapping[str, Any], scale: int, patch_size: int) -> SRFlow | SRRegressor:
    """The flow or the regressor of a ``model`` params section (``flow``: flow settings, see :func:`flow_config`;
    ``residual``: the flow models HR minus the bicubic LR; ``head_hidden``: regression head width;
    ``encoder_from_regression``: read by :func:`train_sr`)."""
    unknown = sorted(set(model) - {"flow", "residual", "head_hidden", "encoder_from_regression"})
    if unknown or "flow" not in model:
        raise PAReconError(f"expected flow, residual, head_hidden and encoder_from_regression; unknown: {unknown}")
    config = flow_config(model["flow"], scale, patch_size)
    if kind == "flow":
        return SRFlow(config, scale, bool(model.get("residual", False)))
    if kind == "regression":
        return SRRegressor(config, scale, int(model.get("head_hidden", 32)))
    raise PAReconError(f"unknown SR model kind {kind!r}; use flow or regression", field="kind")


def copy_encoder(source: SRRegressor, target: SRFlow) -> int:
    """Copy the regressor's encoder weights into the flow's encoder wherever name and shape agree (the stem and
    trunk; not the per-scale heads); returns the number of tensors copied (PAReconError when none fit)."""
    assert target.flow.encoder is not None  # an SRFlow is conditional
    theirs = source.encoder.state_dict()
    ours = target.flow.encoder.state_dict()
    shared = {k: v for k, v in theirs.items()
              if not k.startswith("heads.") and k in ours and ours[k].shape == v.shape}
    if not shared:
        raise PAReconError("the regression encoder shares no weights with the flow's encoder", field="model")
    target.flow.encoder.load_state_dict(shared, strict=False)
    return len(shared)


# ------------------------------------------------------------------------------------------------------ losses
def flow_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Trainer loss of the flow: mean bits per HR sub-pixel of uint8 pairs (HR (B, 3, P, P), LR (B, 3, p, p)),
    one uniform dequantization draw (see the module docstring)."""
    hr, lr = batch
    log_p = model(hr.float(), lr.float() / 255.0)
    return -log_p.mean() / (hr[0].numel() * math.log(2.0)), {}


def l1_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Trainer loss of the regressor: mean |SR − HR| on the [0, 1] scale of uint8 pairs (HR, LR)."""
    hr, lr = batch
    return (model(lr.float() / 255.0) - hr.float() / 255.0).abs().mean(), {}


LOSSES: dict[str, LossFn] = {"flow": flow_loss, "regression": l1_loss}


def _preview(kind: Kind, hr: Tensor, lr: Tensor) -> Callable[[nn.Module], Tensor]:
    """Trainer ``sample_fn``: per patch, the HR patch then the model's outputs (flow: τ = 0 and two samples at
    τ = 0.8; regressor: one), as images (n, 3, P, P) in [0, 1] (16 images, 4 per grid row, for 4 or 8 patches)."""

    def draw(model: nn.Module) -> Tensor:
        rows = []
        device = next(model.parameters()).device
        for x, y in zip(hr.to(device), lr.to(device).float() / 255.0):
            y = y[None]
            if kind == "flow":
                flow = cast(SRFlow, model)
                outputs = torch.cat([flow.sample(y, 1, 0.0), flow.sample(y, 2, 0.8)])
            else:
                outputs = cast(SRRegressor, model).predict(y)
            rows.append(torch.cat([x[None].float() / 255.0, outputs]))
        return torch.cat(rows)

    return draw


# ---------------------------------------------------------------------------------------------------- training
def _md5(path: Path) -> str:
    """Hex MD5 of a file's bytes; PAReconError naming it when it is missing."""
    if not path.is_file():
        raise PAReconError("checkpoint file not found", file=path)
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def uses_regression_encoder(kind: Kind, model: Mapping[str, Any]) -> bool:
    """Whether training ``kind`` with the ``model`` section starts from a regression run's encoder."""
    return kind == "flow" and bool(model.get("encoder_from_regression", False))


def encoder_start(kind: Kind, model: Mapping[str, Any],
                  encoder_from: str | os.PathLike[str] | None) -> dict[str, str] | None:
    """The regression run a training of ``kind`` starts its encoder from (its folder and the MD5 of its
    ``last.pt``), or ``None`` when the ``model`` section does not ask for one; an error when it does and
    ``encoder_from`` is ``None`` or has no checkpoint."""
    if not uses_regression_encoder(kind, model):
        return None
    if encoder_from is None:
        raise PAReconError("is on, so a regression run to start from is needed (encoder_from; sr-train --regression)",
                           field="encoder_from_regression")
    return {"run": str(encoder_from), "md5": _md5(Path(encoder_from) / "last.pt")}


def train_sr(kind: Kind, model: Mapping[str, Any], config: TrainConfig, train: tuple[Tensor, Tensor],
             val: tuple[Tensor, Tensor] | None, scale: int, settings: Mapping[str, Any] | None = None,
             encoder_from: str | os.PathLike[str] | None = None,
             extra_params: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Train the flow (bits/dim) or the regressor (L1) of ``model`` on uint8 patch pairs ``train`` = (HR, LR)
    into ``config.out_dir``; returns the final metrics.

    The folder gets the trainer's files (``last.pt``, ``best.pt``, ``samples/``) and ``run.json`` (``kind``,
    ``scale``, ``patch_size``, ``model``, the training options that shape the result, ``encoder_from`` — the
    regression run whose encoder initialised the flow's, with its checkpoint's MD5 — and the caller's ``settings``;
    the training wall time summed over processes and the hardware). A folder trained with the same settings is
    resumed from ``last.pt``; one trained with other settings is cleared first. ``encoder_from`` is used only when
    ``model['encoder_from_regression']`` is true (flow only).
    """
    run_dir = Path(config.out_dir)
    patch_size = int(train[0].shape[-1])
    init = encoder_start(kind, model, encoder_from)
    torch.manual_seed(config.seed)
    net = build_sr_model(kind, model, scale, patch_size)  # before open_run, so a bad model clears no earlier run
    record = open_run(config, {"kind": kind, "scale": scale, "patch_size": patch_size, "model": dict(model),
                               "encoder_from": init, **(settings or {})})
    if init is not None and not (run_dir / "last.pt").exists():
        source = load_sr_run(init["run"], torch.device("cpu"))[0]
        if not isinstance(source, SRRegressor):
            raise PAReconError("not a regression run", file=Path(init["run"]) / RUN_FILE, field="kind")
        copy_encoder(source, cast(SRFlow, net))
    preview, rows = (val if val is not None else train), 4 if kind == "flow" else 8
    draw = _preview(kind, preview[0][:rows], preview[1][:rows])
    record["parameters"] = count_parameters(net)
    return fit_recorded(config, record, LOSSES[kind], lambda loss: Trainer(
        net, config, loss, train, val, sample_fn=draw, extra_params={"model": dict(model), **(extra_params or {})}))


def load_sr_run(run_dir: str | os.PathLike[str], device: torch.device) -> tuple[SRFlow | SRRegressor, dict[str, Any],
                                                                                 dict[str, Any]]:
    """The finished model of a training folder written by :func:`train_sr`, on ``device`` in eval mode (the final
    weights of ``last.pt``, EMA weights where kept), its run record and its checkpoint; PAReconError naming the
    record's ``kind`` when the folder holds another training (an image flow of flow-train, say)."""
    run_dir = Path(run_dir)
    record = read_run(run_dir)
    s = record["settings"]
    if s.get("kind") not in get_args(Kind):
        found = f"its record gives kind {s['kind']!r}" if "kind" in s else "its record gives no SR model kind"
        if isinstance(s.get("data"), dict) and "dataset" in s["data"]:
            found += f"; it was trained on {s['data']['dataset']!r}"
        raise PAReconError(f"not an SR run of sr-train ({found})", file=run_dir / RUN_FILE, field="kind")
    checkpoint = load_checkpoint(run_dir / "last.pt", map_location=device)
    if not checkpoint.get("finished"):
        raise PAReconError(f"training stopped at step {checkpoint.get('step')} before the end; run it again to "
                           "resume", file=run_dir / "last.pt")
    try:
        model = build_sr_model(s["kind"], s["model"], int(s["scale"]), int(s["patch_size"]))
        model.load_state_dict(inference_state_dict(checkpoint))
    except (KeyError, RuntimeError) as err:
        raise PAReconError(f"run record and checkpoint do not describe one SR model ({err})",
                           file=run_dir / RUN_FILE) from None
    return model.to(device).eval(), record, checkpoint


# ------------------------------------------------------------------------------------------------- inference
Method = Callable[[np.ndarray], np.ndarray]
"""An SR method: LR uint8 ``(h, w, 3)`` → outputs ``(S, s·h, s·w, 3)`` float in [0, 1], S ≥ 1 (samples)."""


def _lr_tensor(lr: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).to(device).float()[None] / 255.0


def _images(x: Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).double().cpu().numpy()


def bicubic_method(scale: int) -> Method:
    """The bicubic baseline: MATLAB-convention bicubic ×scale of the LR, rounded to 8 bits; one output."""
    return lambda lr: to_uint8(upscale(lr / 255.0, scale))[None] / 255.0


def regression_method(model: SRRegressor) -> Method:
    """The regressor's output, one per LR image."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def run(lr: np.ndarray) -> np.ndarray:
        return _images(model.predict(_lr_tensor(lr, device)))

    return run


def flow_method(model: SRFlow, temperature: float, n_samples: int, seed: int = 0) -> Method:
    """``n_samples`` flow samples at ``temperature`` per LR image (one at temperature 0, where the decoding is
    deterministic); the random generators are seeded with ``seed`` for every image, so reruns agree."""
    device = next(model.parameters()).device
    n = 1 if temperature == 0 else n_samples

    @torch.no_grad()
    def run(lr: np.ndarray) -> np.ndarray:
        torch.manual_seed(seed)
        return _images(model.sample(_lr_tensor(lr, device), n, temperature))

    return run


# ------------------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class SREvalConfig:
    """Evaluation settings: flow ``temperatures`` (0 gives one deterministic output), ``samples`` per image at
    every other temperature (≥ 2, for the diversity), ``seed``, ``device``, and the comparison ``figure``:
    ``{set, image, top, left, size}`` (a crop of ``size`` HR pixels of one test image)."""

    temperatures: tuple[float, ...] = (0.0, 0.5, 0.8, 0.9)
    samples: int = 5
    seed: int = 0
    device: str = "auto"
    figure: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SREvalConfig:
        """From a params.yaml ``eval`` section; unknown keys, fewer than 2 samples, a negative temperature or a
        malformed figure raise PAReconError naming the key within the section (``samples``, not ``eval.samples``:
        the caller puts it under the section's own key)."""
        known = {"temperatures", "samples", "seed", "device", "figure"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PAReconError(f"unknown evaluation settings; known: {sorted(known)}", field=unknown[0])
        settings = dict(values)
        if "temperatures" in settings:
            settings["temperatures"] = tuple(check_number(t, f"temperatures[{i}]", minimum=0)
                                             for i, t in enumerate(settings["temperatures"]))
        config = cls(**settings)
        check_count(config.samples, "samples", minimum=2)
        figure = config.figure
        if figure is not None and (set(figure) != {"set", "image", "top", "left", "size"}
                                   or not all(isinstance(figure[k], str) for k in ("set", "image"))
                                   or not all(isinstance(figure[k], int) for k in ("top", "left", "size"))):
            raise PAReconError(f"expected {{set, image, top, left, size}} with names and integer pixels, got {figure}",
                               field="figure")
        return config


def score_outputs(outputs: np.ndarray, image: EvalImage, scale: int) -> dict[str, float]:
    """:data:`METRICS` of SR outputs ``(S, H, W, 3)`` of one test image, each the mean over the S outputs, plus
    ``diversity`` (8-bit levels) when S ≥ 2."""
    per_output = [{"psnr_y": sr_eval.psnr_y(sr, image.hr, scale, grey=image.grey),
                   "ssim_y": sr_eval.ssim_y(sr, image.hr, scale, grey=image.grey),
                   "psnr_rgb": sr_eval.psnr_rgb(sr, image.hr), "ssim_rgb": sr_eval.ssim_rgb(sr, image.hr),
                   "lr_psnr": sr_eval.lr_psnr(sr, image.lr, scale)} for sr in outputs]
    scores = {k: float(np.mean([row[k] for row in per_output])) for k in METRICS}
    if outputs.shape[0] >= 2:
        scores["diversity"] = sr_eval.diversity(outputs)
    return scores


@dataclass(frozen=True)
class Evaluation:
    """Scores of several methods on one test set: ``means[method][metric]`` over the images, and ``per_image``
    ``[method][image name][metric]``."""

    means: dict[str, dict[str, float]]
    per_image: dict[str, dict[str, dict[str, float]]]


def evaluate_methods(images: Sequence[EvalImage], methods: Mapping[str, Method], scale: int,
                     progress: bool = False) -> Evaluation:
    """Run every method on every image's LR and score the outputs against the HR (see :func:`score_outputs`)."""
    if not images:
        raise PAReconError("no test images", field="images")
    per_image: dict[str, dict[str, dict[str, float]]] = {name: {} for name in methods}
    with tqdm(total=len(images) * len(methods), desc="evaluate", disable=not progress) as bar:
        for image in images:
            for name, method in methods.items():
                outputs = method(image.lr)
                if outputs.ndim != 4 or outputs.shape[1:] != image.hr.shape:
                    raise PAReconError(f"method returned shape {outputs.shape}, expected (S, *{image.hr.shape})",
                                       field=name)
                per_image[name][image.name] = score_outputs(outputs, image, scale)
                bar.update(1)
    means = {name: {k: float(np.mean([row[k] for row in rows.values()])) for k in next(iter(rows.values()))}
             for name, rows in per_image.items()}
    return Evaluation(means, per_image)


def _cell(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def results_markdown(results: Mapping[str, Evaluation], scale: int, reference: Mapping[str, Sequence[float]],
                     baseline: str, notes: Sequence[str] = ()) -> str:
    """A Markdown table per test set: one row per method with the Y-channel and RGB metrics, LR-PSNR,
    diversity and the PSNR-Y gain over ``baseline``; ``reference`` {set: (PSNR-Y, SSIM-Y)} of the published
    bicubic figures; ``notes`` are printed under the tables."""
    lines = []
    for set_name, ev in results.items():
        ref = reference.get(set_name)
        lines += [f"## {set_name} (×{scale}, {len(next(iter(ev.per_image.values())))} images)", ""]
        if ref:
            lines += [f"Published bicubic: {ref[0]:.2f} dB / {ref[1]:.4f} (PSNR / SSIM on Y).", ""]
        lines += ["| Method | PSNR-Y dB | SSIM-Y | Δ PSNR-Y vs bicubic | PSNR-RGB dB | SSIM-RGB | LR-PSNR dB "
                  "| Diversity (levels) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        base = ev.means[baseline]["psnr_y"]
        for name, m in ev.means.items():
            cells = [name, _cell(m["psnr_y"], 2), _cell(m["ssim_y"], 4), f"{m['psnr_y'] - base:+.2f}",
                     _cell(m["psnr_rgb"], 2), _cell(m["ssim_rgb"], 4), _cell(m["lr_psnr"], 2),
                     _cell(m.get("diversity"), 2)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join([*lines, *notes, ""])


def figure_crop(image: EvalImage, box: tuple[int, int, int]) -> tuple[slice, slice]:
    """The HR rows and columns of ``box`` = (top, left, size) in HR pixels; a :class:`PAReconError` about
    ``figure`` if the box does not fit in ``image``."""
    top, left, size = box
    h, w = image.hr.shape[:2]
    if not (0 <= top and 0 <= left and size > 0 and top + size <= h and left + size <= w):
        raise PAReconError(f"crop {box} does not fit the {h}×{w} image {image.name}", field="figure")
    return slice(top, top + size), slice(left, left + size)


def save_sr_figure(path: str | os.PathLike[str], image: EvalImage, methods: Mapping[str, Method], scale: int,
                   box: tuple[int, int, int]) -> None:
    """A PNG of one HR crop ``box`` = (top, left, size) in HR pixels: the LR crop (nearest-neighbour ×scale), every
    method's outputs in order (all samples of a method with several), then the HR crop."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    crop = figure_crop(image, box)
    top, left, size = box
    lr_big = np.repeat(np.repeat(image.lr, scale, axis=0), scale, axis=1)
    panels = [("LR (nearest)", lr_big[crop] / 255.0)]
    for name, method in methods.items():
        outputs = method(image.lr)
        panels += [(name if len(outputs) == 1 else f"{name} #{k + 1}", out[crop]) for k, out in enumerate(outputs)]
    panels.append(("HR", image.hr[crop] / 255.0))
    cols = min(len(panels), 5)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, img) in zip(axes.ravel(), panels):
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{image.name}: HR crop {size}×{size} at ({top}, {left}), ×{scale}", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
