"""Small examples of every flow module and of whole flow models, iterated over by the generic tests.

Register a new module by adding a ``ModuleCase``; a new model variant by adding a ``ModelCase``. Each case builds a
fresh instance (parameters as constructed; tests call ``randomize_parameters`` so no layer is an identity).
Per-sample inputs are at most 32-dimensional so float64 brute-force Jacobians stay cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor, nn

from pa_recon.flows.actnorm import ActNorm
from pa_recon.flows.base import Inverse, InvertibleModule, SequentialFlow
from pa_recon.flows.builders import FlowConfig, build_flow
from pa_recon.flows.conv1x1 import InvConv1x1
from pa_recon.flows.coupling import AffineCoupling, Mask
from pa_recon.flows.encoders import LabelEncoder
from pa_recon.flows.injector import AffineInjector
from pa_recon.flows.model import Flow
from pa_recon.flows.pretransform import LogitTransform
from pa_recon.flows.reshape import HaarDownsample, Squeeze
from pa_recon.flows.split import GaussianPrior, Split
from pa_recon.flows.subnets import SubnetConfig

Domain = Literal["real", "unit", "int"]
"""Where a case's inputs live: any real, (0, 1), or integers of ``N_BITS`` bits (models with a dequantizer)."""

N_BITS = 3
SMALL = SubnetConfig("resnet", hidden=8, blocks=1)
GATED = SubnetConfig("gated", hidden=8, blocks=1)


@dataclass(frozen=True)
class ModuleCase:
    """An invertible module, its per-sample input shape (C, H, W), its condition shape (None: unconditional),
    its input domain, and per-sample input shapes it must reject with PAReconError."""

    name: str
    build: Callable[[], InvertibleModule]
    shape: tuple[int, int, int] = (2, 4, 4)
    cond_shape: tuple[int, int, int] | None = None
    domain: Domain = "real"
    bad_shapes: tuple[tuple[int, ...], ...] = ((3, 4, 4),)


@dataclass(frozen=True)
class ModelCase:
    """A whole flow; ``shape`` is its per-sample input shape and ``cond_shape`` that of the condition image.
    ``domain`` is the domain of ``log_prob``'s input; ``forward`` always takes continuous data (unit domain when
    the flow starts with a logit or has a dequantizer)."""

    name: str
    build: Callable[[], Flow]
    shape: tuple[int, int, int]
    cond_shape: tuple[int, int, int] | None = None
    domain: Domain = "real"
    bad_shapes: tuple[tuple[int, ...], ...] = ()


def _coupling(mask: Mask, parity: int, **kw: object) -> Callable[[], AffineCoupling]:
    return lambda: AffineCoupling(2, mask, parity, **kw)  # type: ignore[arg-type]


MODULES: list[ModuleCase] = [
    ModuleCase("coupling-checkerboard-resnet", _coupling("checkerboard", 0, subnet=SMALL)),
    ModuleCase("coupling-checkerboard-gated-odd", _coupling("checkerboard", 1, subnet=GATED)),
    ModuleCase("coupling-packed-checkerboard-resnet", _coupling("checkerboard_packed", 0, subnet=SMALL),
               bad_shapes=((3, 4, 4), (2, 4, 3))),
    ModuleCase("coupling-packed-checkerboard-conditional-odd", _coupling("checkerboard_packed", 1, subnet=GATED,
                                                                         cond_channels=3), cond_shape=(3, 4, 4)),
    ModuleCase("coupling-channel-resnet", _coupling("channel", 0, subnet=SMALL)),
    ModuleCase("coupling-channel-gated-sigmoid", _coupling("channel", 1, subnet=GATED, scale="sigmoid")),
    ModuleCase("coupling-channel-3ch", lambda: AffineCoupling(3, "channel", 1, SMALL), shape=(3, 2, 4),
               bad_shapes=((2, 2, 4),)),
    ModuleCase("coupling-conditional-checkerboard", _coupling("checkerboard", 0, subnet=SMALL, cond_channels=3),
               cond_shape=(3, 4, 4), bad_shapes=((3, 4, 4),)),
    ModuleCase("coupling-conditional-channel", _coupling("channel", 1, subnet=GATED, cond_channels=3),
               cond_shape=(3, 4, 4)),
    ModuleCase("affine-injector", lambda: AffineInjector(2, 3, SMALL), cond_shape=(3, 4, 4)),
    ModuleCase("actnorm", lambda: ActNorm(2)),
    ModuleCase("conv1x1-lu", lambda: InvConv1x1(2)),
    ModuleCase("conv1x1-lu-4ch", lambda: InvConv1x1(4), shape=(4, 2, 4), bad_shapes=((2, 2, 4),)),
    ModuleCase("squeeze", Squeeze, bad_shapes=((2, 3, 4), (2, 4, 5), (2, 4))),
    ModuleCase("haar-orthonormal", lambda: HaarDownsample("orthonormal"), bad_shapes=((2, 3, 4), (2, 4, 5))),
    ModuleCase("haar-mrcnf", lambda: HaarDownsample("mrcnf"), bad_shapes=((2, 4, 3),)),
    ModuleCase("logit", lambda: LogitTransform(0.05, 2), domain="unit"),
    ModuleCase("sigmoid", lambda: Inverse(LogitTransform(0.0, 2))),
    ModuleCase("sequential-dequantization-noise-flow", lambda: SequentialFlow(
        [AffineCoupling(2, "checkerboard", i % 2, SMALL, cond_channels=3) for i in range(2)]
        + [Inverse(LogitTransform(0.0, 2))]), cond_shape=(3, 4, 4)),
]

def _label_conditional() -> Flow:
    """Class-conditional flow: conditional couplings, injector, split prior and final prior, label embeddings."""
    modules: list[nn.Module] = [AffineCoupling(2, "checkerboard", 0, SMALL, cond_channels=3), Squeeze(),
                                AffineInjector(8, 3, SMALL), AffineCoupling(8, "channel", 1, GATED, cond_channels=3),
                                Split(8, "conditional", 3, SMALL)]
    prior = GaussianPrior(4, 3, SMALL)
    return Flow(modules, prior, (2, 4, 4), encoder=LabelEncoder(3, 3, [0, 1], (4, 4)))


_BASE = FlowConfig(shape=(2, 4, 4), levels=2, steps=1, subnet=SMALL, cond_features=3, encoder_width=4)

MODELS: list[ModelCase] = [
    ModelCase("realnvp-squeeze", lambda: build_flow(replace(_BASE, architecture="realnvp")), (2, 4, 4),
              bad_shapes=((3, 4, 4), (2, 5, 4))),
    ModelCase("realnvp-mrcnf-haar-logit-conditional-prior", lambda: build_flow(replace(
        _BASE, architecture="realnvp", downsample="haar_mrcnf", logit_alpha=0.05, split_prior="conditional",
        subnet=GATED)), (2, 4, 4), domain="unit"),
    ModelCase("glow-squeeze", lambda: build_flow(replace(_BASE, steps=2)), (2, 4, 4), bad_shapes=((2, 4, 2),)),
    ModelCase("glow-haar-unet-injector-conditional", lambda: build_flow(replace(
        _BASE, downsample="haar", cond_channels=1, injector=True, split_prior="conditional")), (2, 4, 4),
              cond_shape=(1, 4, 4)),
    ModelCase("realnvp-rrdb-upscale2-conditional", lambda: build_flow(replace(
        _BASE, architecture="realnvp", cond_channels=1, encoder="rrdb", cond_upscale=2,
        split_prior="conditional")), (2, 4, 4), cond_shape=(1, 2, 2)),
    ModelCase("glow-uniform-dequantization", lambda: build_flow(replace(
        _BASE, dequantization="uniform", n_bits=N_BITS, logit_alpha=0.05)), (2, 4, 4), domain="int"),
    ModelCase("realnvp-variational-dequantization", lambda: build_flow(replace(
        _BASE, architecture="realnvp", dequantization="variational", n_bits=N_BITS, dequant_steps=2,
        logit_alpha=0.05)), (2, 4, 4), domain="int"),
    ModelCase("label-conditional", _label_conditional, (2, 4, 4), cond_shape=(3, 1, 1), bad_shapes=((2, 4, 2),)),
]


@torch.no_grad()
def randomize_parameters(module: nn.Module, scale: float = 0.05, seed: int = 0) -> nn.Module:
    """Add N(0, scale^2) noise to every parameter (so zero-initialised layers stop being identities) and mark
    every ActNorm as initialised; returns ``module``."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p))
    for m in module.modules():
        if isinstance(m, ActNorm):
            m.mark_initialized()
    return module


def make_input(shape: tuple[int, ...], domain: Domain, dtype: torch.dtype, seed: int = 0) -> Tensor:
    """A test input of ``shape`` in ``domain``: N(0, 1), U(0.05, 0.95) or integers in [0, 2^N_BITS)."""
    gen = torch.Generator().manual_seed(seed)
    if domain == "real":
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    if domain == "unit":
        return (0.05 + 0.9 * torch.rand(shape, generator=gen, dtype=torch.float64)).to(dtype)
    return torch.randint(0, 2**N_BITS, shape, generator=gen).to(dtype)
