"""Accuracy against the semi-analytic Gaussian solution, and the generic operator contract (via the registry)."""

import numpy as np
import pytest
import torch
from scipy.special import roots_legendre

from pa_recon.errors import PAReconError
from pa_recon.physics.analytic import gaussian_pressure, gaussian_source
from pa_recon.physics.geometry import Grid, LinearArray
from pa_recon.physics.operator import PATOperator, padded_size
from pa_recon.physics.registry import OPERATORS
from pa_recon.physics.timestepping import KSpaceTimeStepper

REFERENCE_GRID = Grid(nx=128, nz=128, dx=1e-4)
REFERENCE_ARRAY = LinearArray.uniform(128, 1e-4, fs=30e6, n_samples=400, sound_speed=1500.0)


@pytest.fixture(scope="module")
def reference_operators():
    return {dtype: PATOperator(REFERENCE_GRID, REFERENCE_ARRAY, dtype=dtype) for dtype in (torch.float32, torch.float64)}


@pytest.mark.parametrize(("xc_px", "zc_px"), [(0.0, 64.0), (-50.0, 110.0), (40.0, 16.0)])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-6), (torch.float32, 1e-3)])
def test_matches_semi_analytic_gaussian_solution(reference_operators, xc_px, zc_px, dtype, tol):
    dx, sigma = REFERENCE_GRID.dx, 2 * REFERENCE_GRID.dx
    p0 = gaussian_source(REFERENCE_GRID, xc_px * dx, zc_px * dx, sigma)
    y = reference_operators[dtype](torch.as_tensor(p0, dtype=dtype)[None, None])[0].double().numpy()
    ref = gaussian_pressure(REFERENCE_ARRAY, xc_px * dx, zc_px * dx, sigma)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) <= tol


def test_padding_leaves_no_time_for_periodic_copies_to_arrive():
    mz, mx = padded_size(REFERENCE_GRID, REFERENCE_ARRAY)
    reach_px = REFERENCE_ARRAY.sound_speed * REFERENCE_ARRAY.times()[-1] / REFERENCE_GRID.dx
    assert mz % 2 == 1 and mx % 2 == 1
    assert mx - 128 > reach_px and mz - 128 > reach_px


@pytest.fixture(params=sorted(OPERATORS))
def name(request):
    return request.param


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_adjoint_dot_product(name, dtype, tol):
    op = OPERATORS[name](dtype)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, *op.image_shape, generator=gen, dtype=dtype)
    y = torch.randn(3, *op.data_shape, generator=gen, dtype=dtype)
    ax = op(x)
    gap = abs(float((ax * y).sum() - (x * op.adjoint(y)).sum()))
    assert gap / float(ax.norm() * y.norm()) <= tol


def test_autograd_gradient_is_the_adjoint(name):
    op = OPERATORS[name](torch.float64)
    x = torch.randn(2, *op.image_shape, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, *op.data_shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad((op(x) * y).sum(), x)
    torch.testing.assert_close(grad, op.adjoint(y), rtol=1e-12, atol=1e-12)


def test_batches_equal_single_scans_and_inputs_are_untouched(name):
    op = OPERATORS[name](torch.float64)
    x = torch.randn(3, *op.image_shape, dtype=torch.float64)
    y = torch.randn(3, *op.data_shape, dtype=torch.float64)
    x_copy, y_copy = x.clone(), y.clone()
    ax, aty = op(x), op.adjoint(y)
    for i in range(3):
        torch.testing.assert_close(ax[i : i + 1], op(x[i : i + 1]), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(aty[i : i + 1], op.adjoint(y[i : i + 1]), rtol=1e-12, atol=1e-14)
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy)


def test_rebuilt_from_saved_geometry_reproduces_outputs(name):
    op = OPERATORS[name](torch.float64)
    again = PATOperator(Grid.from_dict(op.grid.to_dict()), LinearArray.from_dict(op.array.to_dict()),
                        dtype=torch.float64)
    x = torch.randn(1, *op.image_shape, dtype=torch.float64)
    assert torch.equal(op(x), again(x))


def test_linearity(name):
    op = OPERATORS[name](torch.float64)
    a, b = torch.randn(2, 1, *op.image_shape, dtype=torch.float64)
    torch.testing.assert_close(op(2.5 * a - b), 2.5 * op(a) - op(b), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["ideal-point", "wide-elements", "offset-array-late-start"])
def test_agrees_with_the_independent_time_stepper(name):
    op = OPERATORS[name](torch.float64)
    x = torch.rand(2, *op.image_shape, dtype=torch.float64)
    stepped = KSpaceTimeStepper(op.grid, op.array).simulate(x)
    torch.testing.assert_close(op(x), stepped, rtol=0, atol=1e-9 * float(stepped.abs().max()))


def test_element_width_is_the_average_over_the_element_face():
    grid = Grid(nx=16, nz=12, dx=1e-4)
    width, centres = 1.2e-4, np.array([-3e-4, 2.5e-4])
    kw = {"fs": 30e6, "n_samples": 48}
    wide = PATOperator(grid, LinearArray(element_x=tuple(centres), element_width=width, **kw), dtype=torch.float64)
    nodes, weights = roots_legendre(24)
    offsets = nodes * width / 2
    points = LinearArray(element_x=tuple((centres[:, None] + offsets[None, :]).ravel()), **kw)
    x = torch.rand(1, 1, 12, 16, dtype=torch.float64)
    sampled = PATOperator(grid, points, dtype=torch.float64)(x).reshape(1, 2, 24, 48)
    average = (sampled * torch.as_tensor(weights / 2)[None, None, :, None]).sum(dim=2)
    torch.testing.assert_close(wide(x), average, rtol=0, atol=1e-9 * float(average.abs().max()))


def test_fine_and_coarse_grids_agree_on_a_smooth_source():
    grid = Grid(nx=28, nz=28, dx=1e-4)
    array = LinearArray.uniform(12, 1.5e-4, fs=30e6, n_samples=80)
    fine = grid.refined(2)
    xc, zc, sigma = 1e-4, 1.4e-3, 2e-4
    coarse_y, fine_y = (
        PATOperator(g, array, dtype=torch.float64)(torch.as_tensor(gaussian_source(g, xc, zc, sigma))[None, None])
        for g in (grid, fine)
    )
    # Pixels are samples of the pressure field, not integrals over the pixel: the same field, the same data.
    assert float((fine_y - coarse_y).norm() / coarse_y.norm()) < 1e-6


@pytest.mark.parametrize(("shape", "field"), [((2, 12, 16), "p0"), ((2, 2, 12, 16), "p0"), ((2, 1, 12, 15), "p0")])
def test_wrong_image_shape_is_rejected(shape, field):
    op = OPERATORS["ideal-point"](torch.float32)
    with pytest.raises(PAReconError, match=field):
        op(torch.zeros(shape))


def test_wrong_data_shape_is_rejected():
    op = OPERATORS["ideal-point"](torch.float32)
    with pytest.raises(PAReconError, match="y"):
        op.adjoint(torch.zeros(1, 9, 48))
