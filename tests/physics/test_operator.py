"""Accuracy against the semi-analytic Gaussian solution, and the generic operator contract (via the registry)."""

import math

import numpy as np
import pytest
import torch
from scipy.special import j0, roots_legendre

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


def band_passed_gaussian_pressure(array: LinearArray, xc: float, zc: float, sigma: float) -> np.ndarray:
    """Free-space pressure of a unit Gaussian source at point elements, ``(n_elements, n_samples)``, seen through
    the sensor's zero-phase Gaussian band-pass written out from its definition.

    The 2D Hankel-transform solution ``∫ σ² exp(−σ²k²/2) cos(ckt) J0(kr) k dk`` is a sum of temporal
    frequencies ``f = ck/2π``; the sensor weights each by ``H(f) = exp(−(f − fc)²/2s²)``, whose power ``H²``
    falls to one half at ``fc ± B·fc/2`` (``B`` the fractional bandwidth), so ``s = B·fc/(2√ln 2)``.
    """
    fc, bandwidth = array.center_frequency, array.fractional_bandwidth
    assert fc is not None
    s = bandwidth * fc / (2 * math.sqrt(math.log(2)))
    nodes, weights = roots_legendre(3000)
    k_max = 12 / sigma  # the source spectrum is below exp(−72) beyond
    k = (nodes + 1) * k_max / 2
    h = np.exp(-0.5 * ((array.sound_speed * k / (2 * np.pi) - fc) / s) ** 2)
    w = weights * k_max / 2 * sigma**2 * np.exp(-((sigma * k) ** 2) / 2) * k * h
    r = np.hypot(np.asarray(array.element_x) - xc, array.z_array - zc)
    t = array.t0 + np.arange(array.n_samples) / array.fs
    return (j0(np.outer(r, k)) * w) @ np.cos(np.outer(k, array.sound_speed * t))


# A narrow band has H(0) ≈ 0 and the operator is exact. A wide one has H(0) far from 0 and, H being a function of
# |f|, a kink there: its impulse response decays only like 1/t², so it reaches the periodic copies that the padding
# keeps out of the ideal data, an error of ~1e-3 at the default margin that shrinks as the margin grows.
@pytest.mark.parametrize(("center_frequency", "bandwidth", "t0", "z_array", "tol"), [
    (5e6, 0.25, 0.0, 0.0, 1e-6), (4e6, 0.25, 1e-6, -2e-4, 1e-6), (5e6, 0.8, 0.0, 0.0, 2e-3)])
def test_band_limited_data_match_the_band_passed_reference(center_frequency, bandwidth, t0, z_array, tol):
    grid = Grid(nx=32, nz=32, dx=1e-4)
    array = LinearArray.uniform(8, 3e-4, fs=30e6, n_samples=120, t0=t0, z_array=z_array,
                                center_frequency=center_frequency, fractional_bandwidth=bandwidth)
    xc, zc, sigma = 1e-4, 1.6e-3, 2e-4
    p0 = torch.as_tensor(gaussian_source(grid, xc, zc, sigma))[None, None]
    y = PATOperator(grid, array, dtype=torch.float64)(p0)[0].numpy()
    ref = band_passed_gaussian_pressure(array, xc, zc, sigma)
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
    """On the operator's own periodic domain both solvers model the same field: equal to rounding on any image."""
    op = OPERATORS[name](torch.float64)
    x = torch.rand(2, *op.image_shape, dtype=torch.float64)
    stepped = KSpaceTimeStepper(op.grid, op.array).simulate(x)
    torch.testing.assert_close(op(x), stepped, rtol=0, atol=1e-9 * float(stepped.abs().max()))


@pytest.mark.parametrize("settings", [{}, {"element_width": 1e-4}, {"z_array": -3e-4, "t0": 5 / 30e6}])
def test_time_stepper_on_a_domain_twice_the_reach_sees_no_periodic_copies(settings):
    """The stepper's periodic domain exceeds the image by twice the distance sound travels, so it cannot share a
    too-small padding with the operator. The source is smooth and vanishes at the image edges, so its field does
    not depend on the size of the periodic domain (that of a pixel image with sharp edges would)."""
    grid = Grid(nx=32, nz=32, dx=1e-4)
    array = LinearArray.uniform(10, 1.3e-4, fs=30e6, n_samples=200, **settings)
    p0 = sum(gaussian_source(grid, xc, zc, 2e-4) for xc, zc in [(-3e-4, 1.2e-3), (4e-4, 2e-3)])
    x = torch.as_tensor(p0)[None, None]
    reach_px = math.ceil(array.sound_speed * array.times()[-1] / grid.dx)
    stepped = KSpaceTimeStepper(grid, array, margin_px=reach_px + 16).simulate(x)
    y = PATOperator(grid, array, dtype=torch.float64)(x)
    torch.testing.assert_close(y, stepped, rtol=0, atol=1e-8 * float(stepped.abs().max()))


@pytest.mark.parametrize(("settings", "field"), [
    ({"center_frequency": 5e6}, "array.center_frequency"), ({"t0": 0.5 / 30e6}, "array.t0")])
def test_time_stepper_refuses_what_it_cannot_model(settings, field):
    array = LinearArray.uniform(4, 1e-4, fs=30e6, n_samples=8, **settings)
    with pytest.raises(PAReconError) as err:
        KSpaceTimeStepper(Grid(nx=4, nz=4, dx=1e-4), array)
    assert err.value.field == field


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


@pytest.mark.parametrize(("direction", "shape", "field"), [
    ("forward", (2, 12, 16), "p0"), ("forward", (2, 2, 12, 16), "p0"), ("forward", (2, 1, 12, 15), "p0"),
    ("adjoint", (1, 9, 48), "y"), ("adjoint", (1, 10, 47), "y"), ("adjoint", (10, 48), "y")])
def test_wrong_shapes_are_rejected(direction, shape, field):
    op = OPERATORS["ideal-point"](torch.float32)
    with pytest.raises(PAReconError) as err:
        getattr(op, direction)(torch.zeros(shape))
    assert err.value.field == field


@pytest.mark.parametrize(("direction", "make", "field", "match"), [
    ("forward", lambda: torch.zeros((2, 1, 12, 16), dtype=torch.float64), "p0",
     r"operator is torch.float32 but p0 is torch.float64: build the operator with dtype=torch.float64, "
     r"or cast p0 with \.float\(\)"),
    ("adjoint", lambda: torch.zeros((2, 10, 48), dtype=torch.float64), "y",
     r"operator is torch.float32 but y is torch.float64: .*dtype=torch.float64.*\.float\(\)"),
    ("forward", lambda: np.zeros((2, 1, 12, 16)), "p0", "expected a torch tensor, got ndarray"),
    ("adjoint", lambda: np.zeros((2, 10, 48)), "y", "expected a torch tensor, got ndarray"),
    ("forward", lambda: [[[[0.0] * 16] * 12]], "p0", "expected a torch tensor, got list"),
    ("forward", lambda: torch.zeros((2, 1, 12, 16), dtype=torch.long), "p0", "expected a floating-point tensor"),
    ("adjoint", lambda: torch.zeros((2, 10, 48), dtype=torch.int32), "y", "expected a floating-point tensor"),
    ("forward", lambda: torch.zeros((2, 12, 16), dtype=torch.float64), "p0", "expected shape"),
    ("adjoint", lambda: torch.zeros((1, 9, 48), dtype=torch.float64), "y", "expected shape")])
def test_wrong_inputs_are_rejected_with_the_fix(direction, make, field, match):
    op = OPERATORS["ideal-point"](torch.float32)
    with pytest.raises(PAReconError, match=match) as err:
        getattr(op, direction)(make())
    assert err.value.field == field


def test_float64_operator_on_float64_input_matches_float32_results():
    op32, op64 = OPERATORS["ideal-point"](torch.float32), OPERATORS["ideal-point"](torch.float64)
    p0 = torch.from_numpy(np.random.default_rng(0).random((2, 1, 12, 16)))   # float64, like a numpy phantom
    y64 = op64(p0)
    assert y64.dtype == torch.float64
    y32 = op32(p0.float())
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-5 * float(y64.abs().max()))
    x64 = op64.adjoint(y64)
    assert x64.dtype == torch.float64
    torch.testing.assert_close(op32.adjoint(y64.float()).double(), x64, rtol=1e-4,
                               atol=1e-5 * float(x64.abs().max()))


def test_autocast_inputs_still_reach_torch():
    """Under autocast torch casts the products itself, so a bf16 input to a float32 operator is not refused."""
    op = OPERATORS["ideal-point"](torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = op(torch.ones((1, 1, 12, 16), dtype=torch.bfloat16))
    assert y.shape == (1, 10, 48)


GRID16 = Grid(nx=16, nz=12, dx=1e-4)
ARRAY16 = LinearArray.uniform(10, 1.3e-4, fs=30e6, n_samples=48)


@pytest.mark.parametrize(("kwargs", "field", "match"), [
    ({"dtype": torch.int32}, "dtype", "floating torch dtype"),
    ({"dtype": torch.complex64}, "dtype", "floating torch dtype"),
    ({"dtype": "float32"}, "dtype", "floating torch dtype"),
    ({"device": "gpu"}, "device", "not a torch device: 'gpu'"),
    ({"margin_px": 2.5}, "margin_px", "must be an integer >= 0"),
    ({"margin_px": -1}, "margin_px", "must be an integer >= 0"),
    ({"grid": {"nx": 16, "nz": 12, "dx": 1e-4}}, "grid", "expected a Grid, got dict"),
    ({"array": None}, "array", "expected a LinearArray, got NoneType")])
def test_bad_operator_settings_name_the_field(kwargs, field, match):
    settings = {"grid": GRID16, "array": ARRAY16} | kwargs
    with pytest.raises(PAReconError, match=match) as err:
        PATOperator(**settings)
    assert err.value.field == field


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_cuda_on_a_machine_without_it_is_a_clear_error(device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PAReconError, match="CUDA was asked for but is not available") as err:
        PATOperator(GRID16, ARRAY16, device=device)
    assert err.value.field == "device"


def test_input_on_another_device_is_a_clear_error():
    # The meta device stands for any other device (a GPU) on a machine without one.
    op = PATOperator(GRID16, ARRAY16)
    with pytest.raises(PAReconError, match="the operator is on cpu but p0 is on meta") as err:
        op(torch.zeros((1, 1, 12, 16), device="meta"))
    assert err.value.field == "p0"


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), None])
def test_cpu_device_by_name_builds_the_same_operator(device):
    op, ref = PATOperator(GRID16, ARRAY16, device=device), OPERATORS["ideal-point"](torch.float32)
    x = torch.ones((1, 1, 12, 16))
    assert torch.equal(op(x), ref(x))
