"""The exact linear forward model of 2D photoacoustics for a linear array, and its adjoint.

Model. The initial pressure ``p0`` on the grid (geometry.py) is read as its trigonometric interpolant on a
periodic domain of ``Mz × Mx`` pixels (odd sizes, so no Nyquist terms). In 2D the homogeneous wave equation
with ``p(t=0) = p0`` and ``∂p/∂t(t=0) = 0`` is solved exactly in k-space: ``p̂(k, t) = p̂0(k) cos(c|k|t)``.
The periodic domain is padded so that no periodic copy of any pixel reaches any element within the recording
time, which makes the periodic solution equal the free-space one (waves travel at speed c exactly, also in 2D).

Because the array is a line ``z = z_array``, the map from the image to the data factorises:

1. a lateral DFT of each image row at wavenumbers ``kx_m`` (a dense ``nx × 2Kx`` real matrix: cos and sin parts);
2. for each ``kx_m`` a depth-time kernel ``K_m[z_i, t_n] = (1/Mz) Σ_kz cos(kz (z_array − z_i)) H(ω) cos(ω t_n)``
   with ``ω = c·sqrt(kx_m² + kz²)`` and ``H`` the sensor's zero-phase electrical response — one batched
   matrix product over ``m``;
3. evaluation of the lateral series at the element centres, averaged over the element width (a factor
   ``sinc(kx w / 2)``) — a dense ``2Kx × n_elements`` matrix.

Each step is a real matrix product, so the adjoint is the same steps transposed in reverse order and is exact
to rounding. Memory: the kernel holds ``Kx · nz · n_samples`` numbers (≈35 MB in float32 at 128×128, 400 samples).
"""

from __future__ import annotations

import math
from os import PathLike

import numpy as np
import torch

from pa_recon.checks import check_count
from pa_recon.errors import PAReconError
from pa_recon.physics.geometry import Grid, LinearArray

#: Extra pixels of padding beyond the distance sound travels in the recording time (covers the tails of the
#: band-limited pixel basis).
DEFAULT_MARGIN_PX = 16


def _odd_at_least(n: float) -> int:
    m = int(math.ceil(n))
    return m if m % 2 == 1 else m + 1


def padded_size(grid: Grid, array: LinearArray, margin_px: int = DEFAULT_MARGIN_PX) -> tuple[int, int]:
    """Periodic domain ``(Mz, Mx)`` in pixels such that no periodic copy reaches an element in time.

    A copy of a source shifted by the period L is at least ``L − span`` from any element, where ``span`` is the
    extent covered by image and elements together; it must exceed ``c · t_max``.
    """
    reach = array.sound_speed * float(array.times()[-1])
    x_img, pos = grid.x(), array.positions()
    half_w = array.element_width / 2
    span_x = max(x_img[-1] + grid.dx / 2, pos.max() + half_w) - min(x_img[0] - grid.dx / 2, pos.min() - half_w)
    span_z = max(grid.nz * grid.dx, array.z_array) - min(0.0, array.z_array)
    mx = _odd_at_least((span_x + reach) / grid.dx + margin_px)
    mz = _odd_at_least((span_z + reach) / grid.dx + margin_px)
    return mz, mx


def _half_spectrum(m: int, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative wavenumbers of an odd periodic grid of ``m`` pixels (rad/m) and their pair weights (1 or 2)."""
    k = 2 * np.pi * np.arange((m + 1) // 2) / (m * dx)
    weight = np.full(k.shape, 2.0)
    weight[0] = 1.0
    return k, weight


def build_matrices(
    grid: Grid, array: LinearArray, margin_px: int = DEFAULT_MARGIN_PX, block: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three real factors of the operator in float64.

    Returns ``lateral (nx, 2Kx)``, ``kernel (Kx, nz, n_samples)`` and ``elements (2Kx, n_elements)``.
    ``block`` bounds memory while the kernel is built (lateral wavenumbers per batch).
    """
    mz, mx = padded_size(grid, array, margin_px)
    kx, wx = _half_spectrum(mx, grid.dx)
    kz, wz = _half_spectrum(mz, grid.dx)
    x, z, t = grid.x(), grid.z(), array.times()

    phase_in = np.outer(x, kx)
    lateral = np.concatenate([np.cos(phase_in), -np.sin(phase_in)], axis=1)

    depth = wz[None, :] * np.cos(np.outer(array.z_array - z, kz)) / mz
    kernel = np.empty((kx.size, grid.nz, t.size))
    for start in range(0, kx.size, block):
        omega = array.sound_speed * np.hypot(kx[start:start + block, None], kz[None, :])
        response = array.frequency_response(omega / (2 * np.pi))
        time = response[..., None] * np.cos(omega[..., None] * t)
        kernel[start:start + block] = np.matmul(depth, time)

    width = np.sinc(kx * array.element_width / (2 * np.pi))
    phase_out = np.outer(kx, array.positions())
    scale = (wx * width / mx)[:, None]
    elements = np.concatenate([scale * np.cos(phase_out), -scale * np.sin(phase_out)], axis=0)
    return lateral, kernel, elements


_CASTS = {torch.float32: ".float()", torch.float64: ".double()", torch.float16: ".half()",
          torch.bfloat16: ".bfloat16()"}


def _cast_hint(dtype: torch.dtype) -> str:
    return _CASTS.get(dtype, f".to({dtype})")


def _check_settings(grid: object, array: object, dtype: object, margin_px: object) -> None:
    """Refuse constructor arguments of the wrong kind, each naming its argument."""
    if not isinstance(grid, Grid):
        raise PAReconError(f"expected a Grid, got {type(grid).__name__}", field="grid")
    if not isinstance(array, LinearArray):
        raise PAReconError(f"expected a LinearArray, got {type(array).__name__}", field="array")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise PAReconError(f"expected a real floating torch dtype (torch.float32 or torch.float64), got {dtype!r}",
                           field="dtype")
    check_count(margin_px, "margin_px")


def check_device(device: torch.device | str, field: str = "device",
                 file: str | PathLike[str] | None = None) -> torch.device:
    """``device`` as a :class:`torch.device`, refusing (naming ``field``, and ``file`` where given) a name torch
    does not know or an accelerator this machine lacks."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise PAReconError(f"not a torch device: {device!r}", file=file, field=field) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise PAReconError("CUDA was asked for but is not available; ask for 'cpu'", file=file, field=field)
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise PAReconError(f"CUDA device {resolved.index} was asked for but only {torch.cuda.device_count()} "
                               "are available", file=file, field=field)
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise PAReconError("MPS was asked for but is not available; ask for 'cpu'", file=file, field=field)
    return resolved


class PATOperator(torch.nn.Module):
    """Limited-view PAT forward operator ``A``: ``(B, 1, nz, nx)`` initial pressure → ``(B, n_el, n_samples)``.

    ``op(p0)`` applies ``A``; ``op.adjoint(y)`` applies ``Aᵀ`` exactly. Batched, differentiable, any float
    dtype and device (move with ``.to``). Both directions cost three matrix products.

    Inputs must be torch tensors of the operator's own dtype and device; nothing is cast silently (a float64
    numpy phantom needs ``dtype=torch.float64`` here, or ``torch.as_tensor(p0).float()``). A wrong type, dtype,
    device or shape is a :class:`~pa_recon.errors.PAReconError` naming ``p0`` or ``y``.
    """

    lateral: torch.Tensor
    kernel: torch.Tensor
    elements: torch.Tensor

    def __init__(
        self,
        grid: Grid,
        array: LinearArray,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        margin_px: int = DEFAULT_MARGIN_PX,
    ) -> None:
        _check_settings(grid, array, dtype, margin_px)
        device = None if device is None else check_device(device)
        super().__init__()
        self.grid = grid
        self.array = array
        for name, value in zip(("lateral", "kernel", "elements"), build_matrices(grid, array, margin_px)):
            self.register_buffer(name, torch.as_tensor(value, dtype=dtype, device=device), persistent=False)
        self.n_k = self.kernel.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(1, nz, nx)``."""
        return (1, self.grid.nz, self.grid.nx)

    @property
    def data_shape(self) -> tuple[int, int]:
        """``(n_elements, n_samples)``."""
        return (self.array.n_elements, self.array.n_samples)

    def _check(self, t: object, shape: tuple[int, ...], what: str) -> None:
        """Refuse (naming ``what``) anything but a floating tensor of the given shape and the operator's dtype and
        device, before torch would fail inside a matrix product."""
        if not isinstance(t, torch.Tensor):
            raise PAReconError(f"expected a torch tensor, got {type(t).__name__} (convert with torch.as_tensor)",
                               field=what)
        if not t.is_floating_point():
            raise PAReconError(f"expected a floating-point tensor, got {t.dtype}", field=what)
        if t.ndim != len(shape) + 1 or tuple(t.shape[1:]) != shape:
            raise PAReconError(f"expected shape (batch, {', '.join(map(str, shape))}), got {tuple(t.shape)}",
                               field=what)
        dtype, device = self.lateral.dtype, self.lateral.device
        # Under autocast torch itself casts the matrix products (e.g. bf16 inputs to a float32 operator).
        if t.dtype != dtype and not torch.is_autocast_enabled(t.device.type):
            raise PAReconError(f"the operator is {dtype} but {what} is {t.dtype}: build the operator with "
                               f"dtype={t.dtype}, or cast {what} with {_cast_hint(dtype)}", field=what)
        if t.device != device:
            raise PAReconError(f"the operator is on {device} but {what} is on {t.device}: move one of them with "
                               f".to({str(t.device)!r}) or .to({str(device)!r})", field=what)

    def _to_k_major(self, t: torch.Tensor, batch: int, rows: int) -> torch.Tensor:
        """``(B·rows, 2Kx)`` → ``(Kx, 2B, rows)``."""
        return t.reshape(batch, rows, 2, self.n_k).permute(3, 2, 0, 1).reshape(self.n_k, 2 * batch, rows)

    def _from_k_major(self, t: torch.Tensor, batch: int, rows: int) -> torch.Tensor:
        """``(Kx, 2B, rows)`` → ``(B·rows, 2Kx)``; inverse of :meth:`_to_k_major`."""
        return t.reshape(self.n_k, 2, batch, rows).permute(2, 3, 1, 0).reshape(batch * rows, 2 * self.n_k)

    def forward(self, p0: torch.Tensor) -> torch.Tensor:
        """``A p0``: ``(B, 1, nz, nx)`` → ``(B, n_elements, n_samples)``."""
        self._check(p0, self.image_shape, "p0")
        b, (_, nz, nx), (n_el, n_t) = p0.shape[0], self.image_shape, self.data_shape
        spectrum = self._to_k_major(p0.reshape(b * nz, nx) @ self.lateral, b, nz)
        series = self._from_k_major(torch.bmm(spectrum, self.kernel), b, n_t)
        return (series @ self.elements).reshape(b, n_t, n_el).transpose(1, 2)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``Aᵀ y``: ``(B, n_elements, n_samples)`` → ``(B, 1, nz, nx)``."""
        self._check(y, self.data_shape, "y")
        b, (_, nz, nx), (n_el, n_t) = y.shape[0], self.image_shape, self.data_shape
        series = self._to_k_major(y.transpose(1, 2).reshape(b * n_t, n_el) @ self.elements.T, b, n_t)
        spectrum = self._from_k_major(torch.bmm(series, self.kernel.transpose(1, 2)), b, nz)
        return (spectrum @ self.lateral.T).reshape(b, 1, nz, nx)
