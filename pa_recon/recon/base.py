"""What every reconstruction algorithm shares: the operator protocol, its norm, and input checks.

All algorithms are batched over scans: each scan of a ``(B, ...)`` batch is solved independently, with its own
step sizes, as if it had been passed alone.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol, runtime_checkable

import torch

from pa_recon.checks import check_number
from pa_recon.errors import PAReconError


@runtime_checkable
class LinearOperator(Protocol):
    """A batched linear map ``A`` from images ``(B, *image_shape)`` to data ``(B, *data_shape)``.

    ``op(x)`` applies ``A`` and ``op.adjoint(y)`` applies ``Aᵀ`` (the exact adjoint for the plain dot product).
    :class:`pa_recon.physics.operator.PATOperator` is one; so is any dense matrix wrapped with these members.
    """

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image, without the batch axis (``(1, nz, nx)`` for PAT)."""
        ...

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one scan's data, without the batch axis (``(n_elements, n_samples)`` for PAT)."""
        ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def adjoint(self, y: torch.Tensor) -> torch.Tensor: ...


class ReconResult(NamedTuple):
    """An iterative reconstruction: ``image`` ``(B, *image_shape)`` and ``history`` ``(n_done + 1, B)``, the
    monitored quantity at the start and after each iteration done."""

    image: torch.Tensor
    history: torch.Tensor


def require(ok: bool, message: str, field: str) -> None:
    """Raise :class:`PAReconError` naming ``field`` unless ``ok``."""
    if not ok:
        raise PAReconError(message, field=field)


def _check_tensor(t: object, shape: tuple[int, ...], field: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise PAReconError(f"expected a torch tensor, got {type(t).__name__}", field=field)
    require(t.is_floating_point(), f"expected a floating-point tensor, got {t.dtype}", field)
    expected = ", ".join(map(str, shape))
    require(t.ndim == len(shape) + 1 and tuple(t.shape[1:]) == tuple(shape),
            f"expected shape (batch, {expected}), got {tuple(t.shape)}", field)
    require(bool(torch.isfinite(t).all()), "contains NaN or infinite values", field)
    return t


def check_data(op: LinearOperator, y: object) -> torch.Tensor:
    """``y`` as validated data for ``op``: a finite floating tensor of shape ``(B, *op.data_shape)``."""
    return _check_tensor(y, tuple(op.data_shape), "y")


def initial_image(op: LinearOperator, y: torch.Tensor, x0: object | None) -> torch.Tensor:
    """A fresh copy of the starting image ``x0`` (zeros when ``None``) with ``y``'s batch, dtype and device."""
    if x0 is None:
        return y.new_zeros((y.shape[0], *op.image_shape))
    x = _check_tensor(x0, tuple(op.image_shape), "x0")
    require(x.shape[0] == y.shape[0], f"x0 has {x.shape[0]} images but y has {y.shape[0]} scans", "x0")
    return x.detach().to(dtype=y.dtype, device=y.device, copy=True)


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-scan dot product of two ``(B, ...)`` tensors, shape ``(B,)``."""
    return (a * b).flatten(1).sum(1)


def per_scan(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``(B,)`` tensor shaped to broadcast against ``like`` ``(B, ...)``."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den``, and 0 where ``den`` is 0 (a scan whose search direction or image vanished)."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)), torch.zeros_like(num))


@torch.no_grad()
def operator_norm(
    op: LinearOperator,
    shape: tuple[int, ...] | None = None,
    n_iter: int = 50,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> float:
    """‖A‖, the largest singular value of ``op``, by ``n_iter`` power iterations on ``AᵀA``.

    ``shape`` is one image's shape without the batch axis (default ``op.image_shape``); ``dtype`` and ``device``
    must suit the operator. The estimate approaches ‖A‖ from below; the start is a seeded random image, so the
    result is reproducible.
    """
    shape = tuple(op.image_shape if shape is None else shape)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((1, *shape), generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
    x = x / x.norm()
    estimate = 0.0
    for _ in range(int(n_iter)):
        z = op.adjoint(op(x))
        z_norm = float(z.norm())
        if z_norm == 0.0:
            return 0.0
        # x has unit norm, so ‖AᵀA x‖ estimates the largest eigenvalue of AᵀA, i.e. ‖A‖².
        estimate = math.sqrt(z_norm)
        x = z / z_norm
    return estimate


def lam_from_fraction(
    op: LinearOperator,
    fraction: float,
    *,
    n_iter: int = 50,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> float:
    """The regularisation weight ``fraction · ‖A‖²`` (``‖A‖²`` = largest eigenvalue of ``AᵀA``).

    For Tikhonov (:func:`~pa_recon.recon.cgls`) this makes ``lam`` scale-free: ``fraction = 1e-2`` damps every
    singular direction whose ``σ²`` is below 1 % of the largest. For TV the weight multiplies a sum of image
    differences, so also multiply ``fraction`` by the expected image amplitude (1 for images in [0, 1]).
    """
    check_number(fraction, "fraction", minimum=0)
    return fraction * operator_norm(op, n_iter=n_iter, dtype=dtype, device=device) ** 2
