"""What image-space and latent-space MAP share: the result type, the reduced data misfit, the misfit std the
likelihood allows, and the checks of a MAP problem's inputs.

The operator is never exact: data simulated on a finer grid, or measured, hold a part no image on the
reconstruction grid explains. Weighting the data by the noise std alone then makes a MAP fit that model error.
:func:`total_sigma` adds it as white noise of a given relative level (the approximation-error approach of
Kaipio and Somersalo, with the error's covariance reduced to a multiple of the identity).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from pa_recon.recon.descent import check_sigma
from pa_recon.checks import check_number
from pa_recon.recon.base import LinearOperator, batch_dot, check_data
from pa_recon.recon.prior_protocol import ImagePrior, check_prior


class MAPResult(NamedTuple):
    """A MAP estimate per scan.

    ``image`` ``(B, *image_shape)``; ``history`` ``(n_done + 1, B)``, the objective (nats) at the start and after
    each step (constant once a scan has stopped; non-finite at the step where a scan diverged); ``stopped`` the
    reason each scan stopped (one of :data:`~pa_recon.recon.descent.STOP_REASONS`); ``steps`` ``(B,)`` the steps
    each scan took (for L-BFGS its objective evaluations); ``latents`` the final latents of a latent-space MAP, else ``None``.
    An image-space MAP also gives ``starts``, what each scan started from, and ``start_nll`` ``(B,)``, the prior's
    NLL in nats per pixel of a latent-MAP start (``None`` without one).
    """

    image: torch.Tensor
    history: torch.Tensor
    stopped: tuple[str, ...]
    steps: torch.Tensor
    latents: list[torch.Tensor] | None
    starts: tuple[str, ...] | None = None
    start_nll: torch.Tensor | None = None


def chi_square(op: LinearOperator, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Reduced data misfit ``‖A x − y‖² / (σ² M)`` per scan ``(B,)``; about 1 for an image consistent with the
    data at noise std ``σ`` ``(B,)``, ``M`` data values per scan."""
    r = op(x) - y
    return batch_dot(r, r) / (sigma**2 * r[0].numel())


def total_sigma(y: torch.Tensor, sigma: torch.Tensor, model_error: float) -> torch.Tensor:
    """Per-scan std ``(B,)`` of the misfit a likelihood allows: ``√(σ² + (η · rms(y))²)`` for noise std ``σ``
    ``(B,)`` (data units), model error ``η = model_error`` (relative to the RMS of each scan's data ``y``
    ``(B, ...)``, e.g. 0.03 for 3 %); ``η = 0`` returns ``σ``."""
    eta = check_number(model_error, "model_error", minimum=0)
    rms = y.pow(2).flatten(1).mean(1).sqrt()
    return torch.sqrt(sigma**2 + (eta * rms) ** 2)


def zero_latents(prior: ImagePrior, y: torch.Tensor) -> list[torch.Tensor]:
    """Zero latents of ``prior``, one ``(B, C, H, W)`` per latent shape, with ``y``'s batch, dtype and device."""
    return [y.new_zeros((y.shape[0], *shape)) for shape in prior.latent_shapes()]


def check_inputs(op: LinearOperator, y: object, sigma: float | torch.Tensor,
                 prior: object) -> tuple[torch.Tensor, torch.Tensor, ImagePrior]:
    """Validated data ``(B, *op.data_shape)``, per-scan noise std ``(B,)`` and prior of a MAP problem."""
    y = check_data(op, y)
    return y, check_sigma(sigma, y), check_prior(prior, op)
