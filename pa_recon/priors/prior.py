"""A normalizing flow wrapped as an image prior for PAT: marginal ``p(x)`` or conditional ``p(x | c)``.

The model. An image ``x`` ``(B, 1, nz, nx)`` (initial pressure in phantom units, vessels in ``[0, 1]``) passes
through the elementwise :class:`~pa_recon.priors.pretransform.SoftLogit` ``T`` and then a multi-scale flow ``F``
(:func:`pa_recon.flows.build_flow`) to latents ``z`` with standard-normal priors. So

    -log p(x [| c]) = -log N(F(T(x) [; c])) - log|det ∂F/∂y| - log|det ∂T/∂x|,

which is defined, smooth and differentiable for every real ``x`` (``T`` is a bijection of the real line).
``generate(z) = T⁻¹(F⁻¹(z))`` is the exact inverse of ``encode``. The split priors and the last latent's prior
are fixed standard normals (``split_prior="standard"``), so the latents are *whitened*: ``generate`` of
``N(0, I)`` latents is a draw from the prior, and ``½‖z‖²`` is the latent-space prior term.

The condition. For a conditional prior ``c`` is the adjoint image of the data, normalised per scan by its
largest absolute value: ``c = Aᵀy / max|Aᵀy|``, shape ``(B, 1, nz, nx)``, values in ``[-1, 1]``. It is
invariant to the data amplitude (``c(a·y) = c(y)`` for ``a > 0``), so the same network serves data in any
units; an all-zero scan gives ``c = 0``. :meth:`FlowPrior.condition` is the one place this is computed, in
training and in reconstruction. A UNet (:class:`pa_recon.flows.UNetEncoder`) turns ``c`` into a feature map
for every flow scale, which the conditional couplings (and affine injectors, when configured) read. ``nll``,
``generate`` and ``encode`` take ``c`` itself or those feature maps (:meth:`FlowPrior.prepare_condition`): an
iterative reconstruction encodes each scan's ``c`` once, not at every step (the UNet is about a third of a step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from pa_recon.errors import PAReconError
from pa_recon.flows import Flow, FlowConfig, build_flow
from pa_recon.flows.model import Cond
from pa_recon.physics.geometry import Grid, LinearArray
from pa_recon.priors.pretransform import SoftLogit

#: Name of the condition normalisation, stored in checkpoints (the only one there is).
CONDITION_NORMALISATION = "max_abs"

KINDS = ("marginal", "conditional")


class AdjointOperator(Protocol):
    """What :meth:`FlowPrior.condition` needs of an operator, e.g. a
    :class:`~pa_recon.physics.operator.PATOperator`: ``adjoint`` maps data ``(B, *data_shape)`` to images
    ``(B, 1, nz, nx)``."""

    def adjoint(self, y: Tensor) -> Tensor: ...


def default_flow_config(kind: str) -> dict[str, Any]:
    """The CPU profile of a prior's flow, as a plain dict (a params.yaml section; ``shape`` comes from the grid).

    Glow, 2 levels × 4 steps, ResNet sub-networks of 32 channels and 1 block; the conditional prior adds a
    UNet of width 16 giving 16 feature channels per scale, read by the conditional couplings. Affine injectors
    (``injector: true``) add about half again to a conditional step's cost; larger profiles should use them.
    """
    _check_kind(kind)
    config: dict[str, Any] = {"architecture": "glow", "levels": 2, "steps": 4,
                              "subnet": {"kind": "resnet", "hidden": 32, "blocks": 1}}
    if kind == "conditional":
        config.update(encoder="unet", cond_features=16, encoder_width=16, injector=False)
    return config


def flow_config_for(kind: str, settings: Mapping[str, Any], grid: Grid) -> FlowConfig:
    """The :class:`FlowConfig` of a ``kind`` prior on ``grid`` from params-style ``settings``.

    ``shape`` is set to ``(1, nz, nx)`` and ``cond_channels`` to 1 (conditional) or 0 (marginal); settings that
    contradict the prior (another shape, a dequantizer, an in-flow logit, learned split priors) raise
    :class:`PAReconError` naming the setting.
    """
    _check_kind(kind)
    values = dict(settings)
    shape = (1, grid.nz, grid.nx)
    if "shape" in values and tuple(values["shape"]) != shape:
        raise PAReconError(f"the flow's shape is set by the grid to {shape}, got {tuple(values['shape'])}",
                           field="shape")
    values.update(shape=shape, cond_channels=1 if kind == "conditional" else 0)
    config = FlowConfig.from_dict(values)
    _check_flow_config(config)
    return config


class FlowPrior(nn.Module):
    """An image prior on ``grid`` from a multi-scale flow; conditional when ``config.cond_channels > 0``.

    ``config``: the flow (see :func:`flow_config_for`); ``alpha``: the pre-transform's logit margin;
    ``array``: the array whose data the conditional prior was trained on (``None`` for a marginal prior).
    ``source`` is the file the prior was loaded from (set by :func:`pa_recon.priors.load_prior`), used in
    messages. Calling the module returns :meth:`nll`.
    """

    def __init__(self, config: FlowConfig, grid: Grid, array: LinearArray | None = None, *,
                 alpha: float = 0.05) -> None:
        super().__init__()
        _check_flow_config(config)
        if config.shape != (1, grid.nz, grid.nx):
            raise PAReconError(f"flow shape {config.shape} does not match the grid's (1, {grid.nz}, {grid.nx})",
                               field="shape")
        self.conditional = config.cond_channels > 0
        if self.conditional and array is None:
            raise PAReconError("a conditional prior needs the array its data come from", field="array")
        self.config, self.grid = config, grid
        self.array = array if self.conditional else None
        self.pretransform = SoftLogit(alpha)
        self.flow: Flow = build_flow(config)
        self.source: str | None = None

    # ------------------------------------------------------------------------------------------------ settings
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(1, nz, nx)``."""
        return (1, self.grid.nz, self.grid.nx)

    def settings(self) -> dict[str, Any]:
        """Everything needed to rebuild this prior (not its weights), as plain data for a checkpoint."""
        return {
            "kind": "conditional" if self.conditional else "marginal",
            "flow": self.config.to_dict(),
            "alpha": self.pretransform.alpha,
            "grid": self.grid.to_dict(),
            "array": None if self.array is None else _plain(self.array.to_dict()),
            "condition_normalisation": CONDITION_NORMALISATION,
        }

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> FlowPrior:
        """Inverse of :meth:`settings` (a freshly initialised prior; load the weights separately)."""
        if settings.get("condition_normalisation") != CONDITION_NORMALISATION:
            raise PAReconError(f"unknown condition normalisation {settings.get('condition_normalisation')!r}",
                               field="condition_normalisation")
        array = settings.get("array")
        return cls(FlowConfig.from_dict(settings["flow"]), Grid.from_dict(settings["grid"]),
                   None if array is None else LinearArray.from_dict(array), alpha=float(settings["alpha"]))

    # ---------------------------------------------------------------------------------------------- condition
    def condition(self, op: AdjointOperator, y: Tensor) -> Tensor | None:
        """``Aᵀy / max|Aᵀy|`` per scan, ``(B, 1, nz, nx)``, for data ``y`` ``(B, n_el, n_t)``; ``None`` for a
        marginal prior. ``op`` is the reconstruction-grid operator."""
        if not self.conditional:
            return None
        back = op.adjoint(y)
        if tuple(back.shape[1:]) != self.image_shape:
            raise PAReconError(f"the operator's images {tuple(back.shape[1:])} are not this prior's "
                               f"{self.image_shape}", field="op")
        scale = back.abs().amax(dim=(1, 2, 3), keepdim=True)
        return back / scale.clamp_min(torch.finfo(back.dtype).tiny)

    def prepare_condition(self, cond: Tensor) -> list[Tensor]:
        """The encoder's feature maps of conditions ``cond`` ``(B, 1, nz, nx)``, one ``(B, C_s, H_s, W_s)`` per
        conditional flow scale: what :meth:`nll`, :meth:`generate` and :meth:`encode` compute from ``cond`` on
        every call. Differentiable in ``cond`` and the encoder's weights."""
        if not isinstance(cond, Tensor):
            raise PAReconError("expected a condition image, not feature maps", field="cond")
        return list(self.flow.features(self._cond(cond, cond.shape[0]), cond.shape[0]).values())

    def _cond(self, cond: Cond, batch: int) -> Tensor | list[Tensor] | None:
        """Check that ``cond`` fits this prior and a batch of ``batch`` images (batch 1 is broadcast); feature maps
        are checked by the flow."""
        if not self.conditional:
            if cond is not None:
                raise PAReconError("a marginal prior takes no condition", field="cond")
            return None
        if cond is None:
            raise PAReconError("this prior is conditional: pass cond = prior.condition(op, y)", field="cond")
        if not isinstance(cond, Tensor):
            if not (isinstance(cond, (list, tuple)) and all(isinstance(f, Tensor) for f in cond)):
                raise PAReconError("expected a condition image or a list of feature maps", field="cond")
            return list(cond)
        if cond.ndim != 4 or tuple(cond.shape[1:]) != self.image_shape or cond.shape[0] not in (1, batch):
            raise PAReconError(f"expected a condition of shape (1 or {batch}, {', '.join(map(str, self.image_shape))})"
                               f", got {tuple(cond.shape)}", field="cond")
        return cond

    def _check_images(self, x: Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise PAReconError(f"expected images of shape (B, {', '.join(map(str, self.image_shape))}), "
                               f"got {tuple(x.shape)}", field="x")
        ref = next(self.parameters())
        if (x.dtype, x.device) != (ref.dtype, ref.device):
            raise PAReconError(f"{x.dtype} images on {x.device} for a {ref.dtype} prior on {ref.device}; move one "
                               "to the other's dtype and device (e.g. prior.to(x.dtype) or x.to(torch.float32))",
                               field="x")

    # -------------------------------------------------------------------------------------------- likelihoods
    def nll(self, x: Tensor, cond: Cond = None) -> Tensor:
        """``-log p(x [| cond])`` in nats, ``(B,)``, of images ``(B, 1, nz, nx)``; any real values (pixels
        outside ``[0, 1]`` are handled by the soft logit), differentiable in ``x`` and ``cond``."""
        self._check_images(x)
        y, logdet = self.pretransform(x)
        return -(self.flow.log_prob(y, self._cond(cond, x.shape[0])) + logdet)

    def forward(self, x: Tensor, cond: Cond = None) -> Tensor:
        """Same as :meth:`nll` (so the trainer's ``compile`` option covers it)."""
        return self.nll(x, cond)

    def bits_per_dim(self, x: Tensor, cond: Cond = None) -> Tensor:
        """``nll / (nz nx log 2)``, ``(B,)``."""
        return self.nll(x, cond) / (x[0].numel() * math.log(2.0))

    # ---------------------------------------------------------------------------------------------- latents
    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """Per-image latent shapes ``(C, H, W)``: one per split (fine to coarse), then the last."""
        return [(c, h, w) for c, h, w in self.flow.latent_shapes]

    def encode(self, x: Tensor, cond: Cond = None) -> list[Tensor]:
        """Whitened latents of images ``(B, 1, nz, nx)``: one ``(B, C, H, W)`` per :meth:`latent_shapes`."""
        self._check_images(x)
        y, _ = self.pretransform(x)
        return self.flow(y, self._cond(cond, x.shape[0])).latents

    def generate(self, latents: list[Tensor], cond: Cond = None) -> Tensor:
        """``x = G(z [; cond])``: whitened latents (as :meth:`encode` returns) → images ``(B, 1, nz, nx)``;
        the exact inverse of :meth:`encode`, differentiable in the latents."""
        shapes = self.latent_shapes()
        batch = latents[0].shape[0] if latents else 0
        if len(latents) != len(shapes) or any(tuple(z.shape) != (batch, *s) for z, s in zip(latents, shapes)):
            raise PAReconError(f"expected {len(shapes)} latents of shapes (B, C, H, W) with (C, H, W) in {shapes}, "
                               f"got {[tuple(z.shape) for z in latents]}", field="latents")
        y = self.flow.inverse(latents, self._cond(cond, batch)).y
        return self.pretransform.inverse(y)[0]

    def compile_passes(self) -> FlowPrior:
        """Replace :meth:`nll` and :meth:`generate` of this prior by ``torch.compile`` versions (one graph per input
        shape) and return it. Fusing the flow's many small kernels speeds up reconstruction of few scans, mostly on a
        GPU; the first call of each shape compiles (seconds to minutes). A compiled prior cannot be pickled."""
        self.nll = torch.compile(self.nll, dynamic=False)
        self.generate = torch.compile(self.generate, dynamic=False)
        return self

    def sample(self, n: int, cond: Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """``n`` images ``(n, 1, nz, nx)`` from the prior with latents ``~ N(0, temperature² I)``; ``cond`` may
        have batch ``n`` or 1 (then all samples share it). ``generator`` seeds the latents (on the prior's
        device)."""
        ref = next(self.parameters())
        latents = [temperature * torch.randn((n, *s), generator=generator, dtype=ref.dtype, device=ref.device)
                   for s in self.latent_shapes()]
        return self.generate(latents, cond)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise PAReconError(f"unknown prior kind {kind!r}; choose one of {KINDS}", field="kind")


def _check_flow_config(config: FlowConfig) -> None:
    """Reject flow settings a prior cannot use, with the reason."""
    problems = [
        (config.shape[0] == 1, "the prior models one-channel images", "shape"),
        (config.dequantization == "none",
         "the prior's data are continuous; it adds its own small dequantization noise in training", "dequantization"),
        (config.logit_alpha is None, "the prior applies its own soft logit before the flow; set the prior's alpha "
         "instead of the flow's logit_alpha", "logit_alpha"),
        (config.split_prior == "standard", "the prior needs whitened latents (standard-normal split priors)",
         "split_prior"),
        (config.cond_channels in (0, 1), "the condition is one image channel", "cond_channels"),
        (config.cond_upscale == 1, "the condition has the image's size", "cond_upscale"),
    ]
    for ok, message, name in problems:
        if not ok:
            raise PAReconError(message, field=name)


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """Arrays to lists of floats, so that the dict loads with ``weights_only=True``."""
    return {k: v.tolist() if hasattr(v, "tolist") else v for k, v in values.items()}

