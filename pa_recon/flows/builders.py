"""Multi-scale flow builders: RealNVP-style and Glow-style, optionally conditional, from one config dataclass.

RealNVP (``levels`` L, ``steps`` K): per level, K checkerboard couplings, then (except on the last level) a 2x
down-sampling, K channel couplings and a split. Glow: per level, a 2x down-sampling, K steps of
ActNorm -> invertible 1x1 conv -> [affine injector] -> affine coupling, and a split except on the last level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from torch import nn

from pa_recon.errors import PAReconError
from pa_recon.flows.actnorm import ActNorm
from pa_recon.flows.base import InvertibleModule
from pa_recon.flows.conv1x1 import InvConv1x1
from pa_recon.flows.coupling import AffineCoupling, ScaleKind
from pa_recon.flows.dequantization import UniformDequantization, VariationalDequantization
from pa_recon.flows.encoders import RRDBEncoder, UNetEncoder
from pa_recon.flows.injector import AffineInjector
from pa_recon.flows.model import Flow, conditional_scales
from pa_recon.flows.pretransform import LogitTransform
from pa_recon.flows.reshape import HaarDownsample, Squeeze
from pa_recon.flows.split import GaussianPrior, Split
from pa_recon.flows.subnets import SubnetConfig


@dataclass(frozen=True)
class FlowConfig:
    """Everything ``build_flow`` needs.

    Data: ``shape`` (C, H, W) of one image; ``dequantization`` "none" (continuous data), "uniform" or "variational"
    for ``n_bits`` integer data; ``logit_alpha``: prepend a logit pre-transform with this alpha (None: none).
    Architecture: ``architecture``, ``levels``, ``steps`` (see module docstring); ``subnet`` for couplings, injectors
    and learned priors; ``scale`` / ``scale_bound`` for the bounded coupling scale; ``downsample`` "squeeze",
    "haar" (orthonormal) or "haar_mrcnf" (volume-preserving, Voleti et al.); ``split_prior`` "standard" or
    "conditional" (learned Gaussian from the kept half, plus the condition features in a conditional flow; the last
    latent then also gets a prior learned from the condition features).
    Conditioning (``cond_channels`` > 0 makes the flow conditional on a (B, cond_channels, Hc, Wc) image):
    ``encoder`` "unet" or "rrdb", ``cond_features`` channels per scale, ``encoder_width``, ``encoder_blocks``,
    ``encoder_depth`` (UNet; None: as deep as the coarsest conditional scale), ``cond_upscale`` (RRDB: flow size /
    condition size), ``injector`` (Glow steps get an affine injector). ``dequant_steps`` couplings in the
    variational dequantizer.
    """

    shape: tuple[int, int, int]
    architecture: Literal["realnvp", "glow"] = "glow"
    levels: int = 3
    steps: int = 4
    subnet: SubnetConfig = field(default_factory=SubnetConfig)
    scale: ScaleKind = "tanh"
    scale_bound: float = 2.0
    downsample: Literal["squeeze", "haar", "haar_mrcnf"] = "squeeze"
    split_prior: Literal["standard", "conditional"] = "standard"
    dequantization: Literal["none", "uniform", "variational"] = "none"
    n_bits: int = 8
    dequant_steps: int = 4
    logit_alpha: float | None = None
    cond_channels: int = 0
    cond_features: int = 16
    encoder: Literal["unet", "rrdb"] = "unet"
    encoder_width: int = 32
    encoder_blocks: int = 1
    encoder_depth: int | None = None
    cond_upscale: int = 1
    injector: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for checkpoints and params.yaml); ``from_dict`` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FlowConfig:
        """Config from a plain mapping (e.g. a params.yaml section); unknown keys raise PAReconError."""
        _check_known(values, cls, "flow settings", "")
        settings = dict(values)
        if "shape" in settings:
            settings["shape"] = tuple(settings["shape"])
        if isinstance(settings.get("subnet"), Mapping):
            _check_known(settings["subnet"], SubnetConfig, "subnet settings", "subnet.")
            settings["subnet"] = SubnetConfig(**settings["subnet"])
        return cls(**settings)


def _check_known(values: Mapping[str, Any], config: type, what: str, prefix: str) -> None:
    """Every key of ``values`` must be a field of the dataclass ``config``; the error names the first unknown one
    (after ``prefix``)."""
    known = {f.name for f in fields(config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PAReconError(f"unknown {what} {unknown}; known: {sorted(known)}", field=prefix + unknown[0])


def _check(config: FlowConfig) -> None:
    choices = {
        "architecture": ("realnvp", "glow"), "downsample": ("squeeze", "haar", "haar_mrcnf"),
        "split_prior": ("standard", "conditional"), "dequantization": ("none", "uniform", "variational"),
        "encoder": ("unet", "rrdb"), "scale": ("tanh", "sigmoid"),
    }
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise PAReconError(f"{getattr(config, name)!r} is not one of {allowed}", field=name)
    if config.levels < 1 or config.steps < 1:
        raise PAReconError(f"levels and steps must be >= 1, got {config.levels}, {config.steps}", field="levels")
    n_down = config.levels if config.architecture == "glow" else config.levels - 1
    _, h, w = config.shape
    if h % 2**n_down or w % 2**n_down:
        raise PAReconError(f"{config.levels} {config.architecture} levels need height and width divisible by "
                           f"{2**n_down}, got {(h, w)}", field="shape")


def _downsample(kind: str) -> InvertibleModule:
    return Squeeze() if kind == "squeeze" else HaarDownsample("orthonormal" if kind == "haar" else "mrcnf")


def _layers(config: FlowConfig, features: int) -> tuple[list[nn.Module], int]:
    """The flow's modules for ``features`` condition channels (0: unconditional), and the last latent's channels."""

    def coupling(c: int, mask: Literal["checkerboard", "channel"], i: int) -> AffineCoupling:
        return AffineCoupling(c, mask, i % 2, config.subnet, features, config.scale, config.scale_bound)

    c = config.shape[0]
    layers: list[nn.Module] = []
    if config.logit_alpha is not None:
        layers.append(LogitTransform(config.logit_alpha, c))
    for level in range(config.levels):
        last = level == config.levels - 1
        if config.architecture == "realnvp":
            layers += [coupling(c, "checkerboard", i) for i in range(config.steps)]
            if last:
                break
            layers.append(_downsample(config.downsample))
            c *= 4
            layers += [coupling(c, "channel", i) for i in range(config.steps)]
        else:
            layers.append(_downsample(config.downsample))
            c *= 4
            for i in range(config.steps):
                layers += [ActNorm(c), InvConv1x1(c)]
                if config.injector and features:
                    layers.append(AffineInjector(c, features, config.subnet, config.scale, config.scale_bound))
                layers.append(coupling(c, "channel", i))
        if not last:
            layers.append(Split(c, config.split_prior, features, config.subnet))
            c -= c // 2
    return layers, c


def build_flow(config: FlowConfig) -> Flow:
    """Build the multi-scale flow that ``config`` describes (freshly initialised: couplings start as identities).

    >>> import torch
    >>> model = build_flow(FlowConfig((1, 8, 8), "glow", levels=2, steps=1, subnet=SubnetConfig(hidden=8, blocks=1)))
    >>> x = torch.randn(4, 1, 8, 8)
    >>> model.log_prob(x).shape
    torch.Size([4])
    >>> [tuple(z.shape) for z in model.encode(x)]
    [(4, 2, 4, 4), (4, 8, 2, 2)]
    >>> model.sample(2, temperature=0.7).shape
    torch.Size([2, 1, 8, 8])
    >>> sr = build_flow(FlowConfig((1, 8, 8), levels=2, steps=1, subnet=SubnetConfig(hidden=8, blocks=1),
    ...                            cond_channels=1, encoder="rrdb", cond_upscale=4, split_prior="conditional"))
    >>> sr.sample(3, cond=torch.randn(1, 1, 2, 2)).shape  # three samples for one 4x smaller condition image
    torch.Size([3, 1, 8, 8])
    """
    _check(config)
    features = config.cond_features if config.cond_channels else 0
    layers, c = _layers(config, features)
    learned_top = features if config.split_prior == "conditional" else 0
    prior = GaussianPrior(c, learned_top, config.subnet)
    encoder: UNetEncoder | RRDBEncoder | None = None
    if features:
        scales = conditional_scales(layers, prior)
        if config.encoder == "unet":
            encoder = UNetEncoder(config.cond_channels, features, scales, config.encoder_width,
                                  config.encoder_depth, config.encoder_blocks)
        else:
            encoder = RRDBEncoder(config.cond_channels, features, scales, config.encoder_width,
                                  config.encoder_blocks, upscale=config.cond_upscale)
    dequantizer: UniformDequantization | None = None
    if config.dequantization == "uniform":
        dequantizer = UniformDequantization(config.n_bits)
    elif config.dequantization == "variational":
        dequantizer = VariationalDequantization(config.shape[0], config.n_bits, config.dequant_steps)
    return Flow(layers, prior, config.shape, encoder, dequantizer)
