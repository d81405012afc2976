"""The generic contract of every registered flow module and model: exact inverse, log-det against a brute-force
float64 Jacobian, no input mutation, gradients to every parameter, state-dict round trip, clear shape errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from pa_recon.errors import PAReconError
from pa_recon.flows.registry import MODELS, MODULES, ModelCase, ModuleCase, make_input, randomize_parameters

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
BATCH = 2


def _build(case: ModuleCase | ModelCase, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)  # some modules draw their initial parameters (e.g. the 1x1 convolution's rotation)
    return randomize_parameters(case.build()).to(dtype)


def _inputs(
    case: ModuleCase | ModelCase, dtype: torch.dtype, domain: str | None = None
) -> tuple[Tensor, Tensor | None]:
    x = make_input((BATCH, *case.shape), domain or case.domain, dtype)
    cond = None if case.cond_shape is None else make_input((BATCH, *case.cond_shape), "real", dtype, seed=1)
    return x, cond


def _continuous(case: ModelCase) -> str:
    """Domain of a model's ``forward`` input (continuous data)."""
    return "unit" if case.domain == "int" else case.domain


def _per_sample_slogdets(fn, x: Tensor) -> Tensor:
    """log|det| of the Jacobian of ``fn`` for each sample of x, after checking samples do not interact."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view_as(x)).reshape(-1), x.reshape(-1))
    d = x[0].numel()
    blocks = jac.view(BATCH, d, BATCH, d)
    out = []
    for i in range(BATCH):
        for j in range(BATCH):
            if i != j:
                assert blocks[i, :, j].abs().max() == 0, "samples of a batch interact"
        sign, logabs = torch.linalg.slogdet(blocks[i, :, i])
        assert sign != 0
        out.append(logabs)
    return torch.stack(out)


def _assert_grads(module: nn.Module) -> None:
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().max() > 0, f"{name} got an all-zero gradient"


# ------------------------------------------------------------------------------------------------------- modules
@pytest.fixture(params=MODULES, ids=[c.name for c in MODULES])
def module_case(request) -> ModuleCase:
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_module_inverse_is_exact(module_case, dtype):
    m = _build(module_case, dtype)
    x, cond = _inputs(module_case, dtype)
    z, logdet = m(x, cond)
    x_back, logdet_inv = m.inverse(z, cond)
    assert logdet.shape == logdet_inv.shape == (BATCH,)
    assert (x_back - x).abs().max() <= TOL[dtype]
    assert (logdet + logdet_inv).abs().max() <= TOL[dtype] * max(1.0, float(logdet.detach().abs().max()))


def test_module_logdet_matches_brute_force_jacobian(module_case):
    m = _build(module_case)
    x, cond = _inputs(module_case, torch.float64)
    z, logdet = m(x, cond)
    torch.testing.assert_close(logdet, _per_sample_slogdets(lambda v: m(v, cond)[0], x), rtol=1e-9, atol=1e-9)
    _, logdet_inv = m.inverse(z, cond)
    torch.testing.assert_close(logdet_inv, _per_sample_slogdets(lambda v: m.inverse(v, cond)[0], z),
                               rtol=1e-9, atol=1e-9)


def test_module_does_not_mutate_inputs(module_case):
    m = _build(module_case)
    x, cond = _inputs(module_case, torch.float64)
    saved = [t.clone() for t in (x, cond) if t is not None]
    z, _ = m(x, cond)
    z_saved = z.clone()
    m.inverse(z, cond)
    for t, s in zip([t for t in (x, cond) if t is not None], saved):
        assert torch.equal(t, s)
    assert torch.equal(z, z_saved)


def test_module_gradients_reach_every_parameter(module_case):
    m = _build(module_case)
    x, cond = _inputs(module_case, torch.float64)
    x.requires_grad_(True)
    z, logdet = m(x, cond)
    weights = make_input(tuple(z.shape), "real", torch.float64, seed=2)
    ((z * weights).sum() + logdet.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().max() > 0
    _assert_grads(m)


def test_module_state_dict_round_trip(module_case):
    m = _build(module_case)
    fresh = module_case.build().double()  # a different random initialisation, overwritten by the load
    fresh.load_state_dict(copy.deepcopy(m.state_dict()))
    x, cond = _inputs(module_case, torch.float64)
    for a, b in zip(m(x, cond), fresh(x, cond)):
        assert torch.equal(a, b)


def test_module_rejects_bad_shapes(module_case):
    m = _build(module_case)
    _, cond = _inputs(module_case, torch.float64)
    for shape in module_case.bad_shapes:
        with pytest.raises(PAReconError):
            m(torch.zeros(BATCH, *shape, dtype=torch.float64), cond)
    if module_case.cond_shape is not None:
        x, _ = _inputs(module_case, torch.float64)
        with pytest.raises(PAReconError):
            m(x, None)
        with pytest.raises(PAReconError):
            m(x, cond[:, :1])


# -------------------------------------------------------------------------------------------------------- models
@pytest.fixture(params=MODELS, ids=[c.name for c in MODELS])
def model_case(request) -> ModelCase:
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_model_inverse_is_exact(model_case, dtype):
    model = _build(model_case, dtype)
    y, cond = _inputs(model_case, dtype, _continuous(model_case))
    out = model(y, cond)
    back = model.inverse(out.latents, cond)
    tol = TOL[dtype] * max(1.0, float(out.logdet.detach().abs().max()), float(out.log_prior.detach().abs().max()))
    assert (back.y - y).abs().max() <= TOL[dtype]
    assert (out.logdet + back.logdet).abs().max() <= tol
    assert (out.log_prior - back.log_prior).abs().max() <= tol


def test_model_log_prob_is_change_of_variables_with_brute_force_jacobian(model_case):
    model = _build(model_case)
    y, cond = _inputs(model_case, torch.float64, _continuous(model_case))
    out = model(y, cond)
    brute = _per_sample_slogdets(lambda v: torch.cat([z.flatten(1) for z in model(v, cond).latents], 1), y)
    torch.testing.assert_close(out.logdet, brute, rtol=1e-9, atol=1e-9)
    # the prior term, recomputed on the inverse path (kept halves rebuilt from the latents)
    log_prior = model.inverse(out.latents, cond).log_prior
    if model.dequantization is None:
        torch.testing.assert_close(model.log_prob(y, cond), log_prior + brute, rtol=1e-9, atol=1e-9)
    else:
        torch.testing.assert_close(out.logdet + out.log_prior, log_prior + brute, rtol=1e-9, atol=1e-9)


def test_model_does_not_mutate_inputs(model_case):
    model = _build(model_case)
    x, cond = _inputs(model_case, torch.float64)
    saved = [t.clone() for t in (x, cond) if t is not None]
    model.log_prob(x, cond)
    latents = model.encode(x, cond)
    latents_saved = [z.clone() for z in latents]
    model.decode(latents, cond)
    model.interpolate(x, x.flip(0), 3, cond)
    for t, s in zip([t for t in (x, cond) if t is not None], saved):
        assert torch.equal(t, s)
    assert all(torch.equal(a, b) for a, b in zip(latents, latents_saved))


def test_model_gradients_reach_every_parameter(model_case):
    model = _build(model_case)
    x, cond = _inputs(model_case, torch.float64)
    (-model.log_prob(x, cond).sum()).backward()
    _assert_grads(model)


def test_model_state_dict_round_trip_reproduces_log_prob(model_case):
    model = _build(model_case)
    fresh = model_case.build().double()
    fresh.load_state_dict(copy.deepcopy(model.state_dict()))
    x, cond = _inputs(model_case, torch.float64)
    torch.manual_seed(3)
    a = model.log_prob(x, cond)
    torch.manual_seed(3)
    b = fresh.log_prob(x, cond)
    assert torch.equal(a, b)


def test_model_encode_decode_sample_and_interpolate(model_case):
    model = _build(model_case)
    x, cond = _inputs(model_case, torch.float64)
    latents = model.encode(x, cond)
    assert [tuple(z.shape[1:]) for z in latents] == [tuple(s) for s in model.latent_shapes]
    assert (model.decode(latents, cond) - x).abs().max() <= 1e-10
    path = model.interpolate(x, x.flip(0), 4, cond)
    assert path.shape == (4, *x.shape)
    assert (path[0] - x).abs().max() <= 1e-10 and (path[-1] - x.flip(0)).abs().max() <= 1e-10
    samples = model.sample(3, None if cond is None else cond[:1], temperature=0.7)
    assert samples.shape == (3, *model_case.shape) and torch.isfinite(samples).all()


def test_model_rejects_bad_inputs(model_case):
    model = _build(model_case)
    x, cond = _inputs(model_case, torch.float64)
    for shape in model_case.bad_shapes:
        with pytest.raises(PAReconError):
            model.log_prob(torch.zeros(BATCH, *shape, dtype=torch.float64), cond)
    with pytest.raises(PAReconError):
        model.decode(model.encode(x, cond)[:-1], cond)
    if model_case.cond_shape is not None:
        with pytest.raises(PAReconError):
            model.log_prob(x, torch.cat([cond, cond], dim=1))
        with pytest.raises(PAReconError):
            model.log_prob(x, None)
