"""The flow model: a sequence of invertible modules and splits, a prior on the last latent, and optionally a
condition encoder and a dequantizer.

Scales: the flow input sits at scale 0; every squeeze/Haar module moves to the next scale (half the height and
width). A conditional module or prior at scale s receives the condition feature map of scale s. The condition is
either a tensor (passed through the encoder when there is one; without an encoder it must be the one feature map
of a flow that is conditional at a single scale) or a list of feature maps, one per entry of ``cond_scales``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, cast

import torch
from torch import Tensor, nn

from pa_recon.errors import PAReconError
from pa_recon.flows.base import InvertibleModule, Shape, check_image
from pa_recon.flows.dequantization import UniformDequantization
from pa_recon.flows.encoders import LabelEncoder, RRDBEncoder, UNetEncoder
from pa_recon.flows.split import GaussianPrior, Split

Cond = Tensor | Sequence[Tensor] | None
"""A condition: a tensor (B, Cc, H, W), a list of per-scale feature maps, or None."""


class Encoding(NamedTuple):
    """Data -> latents: one latent per split (fine to coarse), then the last; log|det dz/dy| and the summed prior
    log-density of the latents, both (B,)."""

    latents: list[Tensor]
    logdet: Tensor
    log_prior: Tensor


class Decoding(NamedTuple):
    """Latents -> data y (B, C, H, W); log|det dy/dz| and the summed prior log-density of the latents, both (B,)."""

    y: Tensor
    logdet: Tensor
    log_prior: Tensor


def module_scales(modules: Sequence[nn.Module]) -> tuple[list[int], int]:
    """Scale index at which each module runs, and the scale of the flow's output."""
    scales, scale = [], 0
    for m in modules:
        scales.append(scale)
        scale += int(getattr(m, "scale_change", 0))
    return scales, scale


def conditional_scales(modules: Sequence[nn.Module], prior: GaussianPrior) -> list[int]:
    """Sorted scales at which some module, split or the final prior needs condition features."""
    scales, final = module_scales(modules)
    needed = {s for m, s in zip(modules, scales) if getattr(m, "cond_channels", 0)}
    return sorted(needed | ({final} if prior.context_channels else set()))


class Flow(nn.Module):
    """A multi-scale normalizing flow over images of per-sample shape ``input_shape`` (C, H, W).

    ``modules``: invertible modules and splits, in the data-to-latent direction. ``prior``: the Gaussian of the last
    latent (its context, if any, is the condition feature map of the last scale). ``encoder``: maps a condition image
    to the per-scale feature list; its ``scales`` must equal ``cond_scales``. ``dequantization``:
    when given, ``log_prob`` takes integer data and returns a dequantization lower bound.
    """

    _ref: Tensor

    def __init__(
        self,
        modules: Sequence[nn.Module],
        prior: GaussianPrior,
        input_shape: Shape,
        encoder: UNetEncoder | RRDBEncoder | LabelEncoder | None = None,
        dequantization: UniformDequantization | None = None,
    ) -> None:
        super().__init__()
        for m in modules:
            if not isinstance(m, (InvertibleModule, Split)):
                raise TypeError(f"Flow takes invertible modules and splits, got {type(m).__name__}")
        self.layers = nn.ModuleList(modules)
        self.prior, self.encoder, self.dequantization = prior, encoder, dequantization
        c, h, w = input_shape
        self.input_shape: Shape = (c, h, w)
        self.scales, self.n_downsamples = module_scales(modules)
        self.cond_scales = conditional_scales(modules, prior)
        if encoder is not None and list(encoder.scales) != self.cond_scales:
            raise PAReconError(f"scales {list(encoder.scales)} differ from the flow's {self.cond_scales}",
                               field="encoder")
        self.latent_shapes = self._latent_shapes(self.input_shape)
        self.register_buffer("_ref", torch.zeros(()), persistent=False)  # dtype/device for sampling

    def _steps(self) -> list[InvertibleModule | Split]:
        return cast("list[InvertibleModule | Split]", list(self.layers))

    def _latent_shapes(self, shape: Shape) -> list[Shape]:
        shapes = []
        for m in self._steps():
            if isinstance(m, Split):
                shape, out = m.out_shapes(shape)
                shapes.append(out)
            else:
                shape = m.out_shape(shape)
        if shape[0] != self.prior.channels:
            raise PAReconError(f"has {self.prior.channels} channels, the flow ends with {shape[0]}", field="prior")
        return [*shapes, shape]

    # ----------------------------------------------------------------------------------------------------- inputs
    def _check_input(self, x: Tensor) -> None:
        check_image(x, self.input_shape[0])
        k = 2**self.n_downsamples
        if x.shape[2] % k or x.shape[3] % k:
            raise PAReconError(f"height and width must be divisible by {k}, got {tuple(x.shape[2:])}", field="x")

    def features(self, cond: Cond, batch: int) -> dict[int, Tensor]:
        """Condition features by scale, each with batch ``batch`` (a condition of batch 1 is broadcast)."""
        if cond is None:
            return {}
        if isinstance(cond, Tensor):
            if self.encoder is not None:
                feats = list(self.encoder(cond))
            elif len(self.cond_scales) == 1:
                feats = [cond]
            else:
                raise PAReconError(
                    f"this flow is conditional at scales {self.cond_scales}: pass one feature map per scale "
                    "or build it with an encoder",
                    field="cond",
                )
        else:
            feats = list(cond)
        if len(feats) != len(self.cond_scales):
            raise PAReconError(f"expected {len(self.cond_scales)} condition feature maps, got {len(feats)}",
                               field="cond")
        for f in feats:
            check_image(f, None, "cond")
            if f.shape[0] not in (1, batch):
                raise PAReconError(f"condition batch {f.shape[0]} does not match data batch {batch}", field="cond")
        return {s: f.expand(batch, *f.shape[1:]) for s, f in zip(self.cond_scales, feats)}

    # ------------------------------------------------------------------------------------------------ bijection
    def forward(self, y: Tensor, cond: Cond = None) -> Encoding:
        """Continuous input y (B, C, H, W) (in [0, 1) for a flow with a dequantizer) -> ``Encoding``."""
        self._check_input(y)
        feats = self.features(cond, y.shape[0])
        logdet, log_prior = y.new_zeros(y.shape[0]), y.new_zeros(y.shape[0])
        latents = []
        for m, s in zip(self._steps(), self.scales):
            if isinstance(m, Split):
                y, z, lp = m(y, feats.get(s))
                latents.append(z)
                log_prior = log_prior + lp
            else:
                y, ld = m(y, feats.get(s))
                logdet = logdet + ld
        latents.append(y)
        log_prior = log_prior + self.prior.log_prob(y, feats.get(self.n_downsamples))
        return Encoding(latents, logdet, log_prior)

    def inverse(self, latents: Sequence[Tensor | None], cond: Cond = None, temperature: float = 1.0) -> Decoding:
        """Latents -> ``Decoding`` (continuous y, the inverse map's log|det|, the prior log-density of the latents
        used). The last latent is required; a None split latent is drawn from its prior at ``temperature``.
        """
        if len(latents) != len(self.latent_shapes) or latents[-1] is None:
            raise PAReconError(f"expected {len(self.latent_shapes)} latents, the last one given", field="latents")
        y = latents[-1]
        n = y.shape[0]
        for z, shape in zip(latents, self.latent_shapes):
            if z is not None and (z.ndim != 4 or z.shape[0] != n or z.shape[1] != shape[0]):
                raise PAReconError(f"latent of shape {tuple(z.shape)} does not fit (B={n}, {shape[0]}, H, W)",
                                   field="latents")
        feats = self.features(cond, n)
        logdet, log_prior = y.new_zeros(n), self.prior.log_prob(y, feats.get(self.n_downsamples))
        k = len(latents) - 1
        for m, s in zip(reversed(self._steps()), reversed(self.scales)):
            if isinstance(m, Split):
                k -= 1
                y, lp = m.inverse(y, latents[k], feats.get(s), temperature)
                log_prior = log_prior + lp
            else:
                y, ld = m.inverse(y, feats.get(s))
                logdet = logdet + ld
        return Decoding(y, logdet, log_prior)

    # ------------------------------------------------------------------------------------------- likelihoods
    def log_weights(self, x: Tensor, cond: Cond = None, n_samples: int = 1) -> Tensor:
        """(K, B) dequantization log-weights log p(y_k) + log_weight_k of integer data x (B, C, H, W)."""
        if self.dequantization is None:
            raise PAReconError("this flow has no dequantizer; log_weights needs one", field="dequantization")
        self._check_input(x)
        b = x.shape[0]
        feats = [f.repeat(n_samples, 1, 1, 1) for f in self.features(cond, b).values()]
        y, log_w = self.dequantization(x.repeat(n_samples, 1, 1, 1))
        out = self(y, feats or None)
        return (out.logdet + out.log_prior + log_w).view(n_samples, b)

    def log_prob(self, x: Tensor, cond: Cond = None, n_samples: int = 1) -> Tensor:
        """Log-likelihood in nats, shape (B,), of x (B, C, H, W).

        Continuous flows: exact. With a dequantizer: the importance-weighted lower bound of the discrete
        log-probability with ``n_samples`` dequantization draws (1: the variational bound).
        """
        if self.dequantization is None:
            out = self(x, cond)
            return out.logdet + out.log_prior
        return torch.logsumexp(self.log_weights(x, cond, n_samples), dim=0) - math.log(n_samples)

    def bits_per_dim(self, x: Tensor, cond: Cond = None, n_samples: int = 1) -> Tensor:
        """-log_prob / (C H W log 2), shape (B,)."""
        return -self.log_prob(x, cond, n_samples) / (x[0].numel() * math.log(2.0))

    # ------------------------------------------------------------------------------------ sampling and latents
    def sample(self, n: int, cond: Cond = None, temperature: float = 1.0) -> Tensor:
        """n samples (n, C, H, W) in data units (integers when there is a dequantizer); the condition may have
        batch n or 1. The image size is ``input_shape``'s, or that of the condition feature maps when given.
        """
        feats = self.features(cond, n)
        c, h, w = self.latent_shapes[-1]
        ref = self._ref
        if feats:
            s, ref = next(iter(feats.items()))
            h, w = ref.shape[2] >> (self.n_downsamples - s), ref.shape[3] >> (self.n_downsamples - s)
        top = self.prior.sample(ref.new_empty(n, c, h, w), feats.get(self.n_downsamples), temperature)
        latents: list[Tensor | None] = [None] * (len(self.latent_shapes) - 1)
        y = self.inverse([*latents, top], list(feats.values()) or None, temperature).y
        return y if self.dequantization is None else self.dequantization.quantize(y)

    def encode(self, x: Tensor, cond: Cond = None) -> list[Tensor]:
        """Per-level latents of x: one per split (fine to coarse), then the last. With a dequantizer, integer data
        are placed at the bin centres (x + 1/2) / 2^n first, so ``decode(encode(x)) == x``.
        """
        y = x if self.dequantization is None else self.dequantization.midpoint(x)
        return self(y, cond).latents

    def decode(self, latents: Sequence[Tensor], cond: Cond = None) -> Tensor:
        """Inverse of ``encode``: latents -> x (B, C, H, W) in data units."""
        y = self.inverse(latents, cond).y
        return y if self.dequantization is None else self.dequantization.quantize(y)

    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int, cond: Cond = None) -> Tensor:
        """Decode the straight line between the latents of x_a and x_b (B, C, H, W): (steps, B, C, H, W)."""
        z_a, z_b = self.encode(x_a, cond), self.encode(x_b, cond)
        t = torch.linspace(0.0, 1.0, steps, dtype=x_a.dtype, device=x_a.device).view(steps, 1, 1, 1, 1)
        path = [((1 - t) * a + t * b).flatten(0, 1) for a, b in zip(z_a, z_b)]
        b = x_a.shape[0]
        feats = [f.repeat(steps, 1, 1, 1) for f in self.features(cond, b).values()]
        return self.decode(path, feats or None).view(steps, b, *x_a.shape[1:])
