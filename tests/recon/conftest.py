"""Shared fixtures: a small dense random operator with PAT-shaped images and data, and a known solution."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch


class DenseOperator:
    """A dense matrix ``M`` as a batched operator: images ``(B, *image_shape)`` → data ``(B, *data_shape)``."""

    def __init__(self, matrix: torch.Tensor, image_shape: tuple[int, ...], data_shape: tuple[int, ...]) -> None:
        self.matrix = matrix
        self.image_shape = image_shape
        self.data_shape = data_shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) @ self.matrix.T).reshape(x.shape[0], *self.data_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (y.flatten(1) @ self.matrix).reshape(y.shape[0], *self.image_shape)


@dataclass
class Problem:
    op: DenseOperator
    x: torch.Tensor
    y: torch.Tensor


@pytest.fixture
def dense_op() -> DenseOperator:
    """36 × 20 Gaussian matrix (well conditioned), images (1, 4, 5), data (3, 12), float64."""
    g = torch.Generator().manual_seed(1)
    matrix = torch.randn(36, 20, generator=g, dtype=torch.float64) / 6
    return DenseOperator(matrix, (1, 4, 5), (3, 12))


@pytest.fixture
def dense_problem(dense_op: DenseOperator) -> Problem:
    """Three positive images in [0.5, 1.5] and their noiseless data."""
    g = torch.Generator().manual_seed(2)
    x = 0.5 + torch.rand(3, *dense_op.image_shape, generator=g, dtype=torch.float64)
    return Problem(dense_op, x, dense_op(x))
