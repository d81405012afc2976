"""FlowPrior: its density against a brute-force change of variables, exact latents, gradients, conditions."""

from __future__ import annotations

import math

import pytest
import torch
from prior_helpers import ARRAY8, GRID4, GRID8, TINY_FLOW, condition, images, make_prior

from pa_recon.errors import PAReconError
from pa_recon.physics import PATOperator
from pa_recon.priors import flow_config_for
from pa_recon.recon.prior_protocol import check_prior

KINDS = ["marginal", "conditional"]


def _cond(prior, n: int, dtype: torch.dtype = torch.float64):
    return condition(n, dtype=dtype) if prior.conditional else None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-0.4, 1.4)])
def test_nll_is_the_change_of_variables_density_of_the_latents(kind, low, high):
    """-log p(x) = ½‖z‖² + (D/2) log 2π - log|det ∂z/∂x|, with the Jacobian of encode built column by column."""
    prior = make_prior(kind)
    x = images(1, low=low, high=high)
    cond = _cond(prior, 1)
    z = torch.cat([v.flatten(1) for v in prior.encode(x, cond)], dim=1)[0]
    jac = torch.autograd.functional.jacobian(
        lambda v: torch.cat([w.flatten(1) for w in prior.encode(v.view_as(x), cond)], dim=1)[0], x.flatten())
    d = z.numel()
    expected = 0.5 * z.dot(z) + 0.5 * d * math.log(2 * math.pi) - torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(prior.nll(x, cond), expected.view(1), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_nll_on_the_data_range_is_the_flow_density_of_the_realnvp_logit_of_the_image(kind, alpha):
    """On [0, 1] the pre-transform is y = logit(p), p = alpha + (1 - 2 alpha) x, with the prior's own alpha, so
    -log p(x) = -log p_flow(y) - sum log((1 - 2 alpha) / (p (1 - p)))."""
    prior = make_prior(kind, alpha=alpha)
    x, cond = images(3), _cond(prior, 3)
    p = alpha + (1 - 2 * alpha) * x
    log_slope = (math.log(1 - 2 * alpha) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
    flow_log_density = prior.flow.log_prob(torch.log(p) - torch.log1p(-p), cond)
    torch.testing.assert_close(prior.nll(x, cond), -(flow_log_density + log_slope), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_generate_inverts_encode_in_float32_also_outside_the_data_range(kind):
    prior = make_prior(kind, dtype=torch.float32)
    x, cond = images(4, low=-0.3, high=1.3, dtype=torch.float32), _cond(prior, 4, torch.float32)
    torch.testing.assert_close(prior.generate(prior.encode(x, cond), cond), x, rtol=0, atol=1e-5)
    z = [torch.randn(4, *s) for s in prior.latent_shapes()]
    for a, b in zip(prior.encode(prior.generate(z, cond), cond), z):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-0.1, 1.1), (-5.0, 6.0)])
def test_nll_has_finite_gradients_for_any_pixel_values(kind, low, high):
    prior = make_prior(kind, dtype=torch.float32)
    x = images(2, low=low, high=high, dtype=torch.float32).requires_grad_()
    nll = prior.nll(x, _cond(prior, 2, torch.float32))
    (grad,) = torch.autograd.grad(nll.sum(), x)
    assert torch.isfinite(nll).all() and torch.isfinite(grad).all() and grad.abs().max() > 0


def test_nll_grows_away_from_the_data_range():
    prior = make_prior("marginal")
    x = images(1, low=0.3, high=0.7)
    with torch.no_grad():
        values = [float(prior.nll(x + shift)) for shift in (0.0, -1.0, -3.0)]
    assert values[0] < values[1] < values[2]


@pytest.mark.parametrize("kind", KINDS)
def test_images_of_a_batch_are_scored_independently(kind):
    prior = make_prior(kind)
    x, cond = images(3), _cond(prior, 3)
    alone = torch.cat([prior.nll(x[i:i + 1], None if cond is None else cond[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(prior.nll(x, cond), alone, rtol=1e-12, atol=1e-10)


def test_condition_is_the_amplitude_invariant_adjoint_image():
    prior = make_prior("conditional", grid=GRID8, dtype=torch.float32)
    op = PATOperator(GRID8, ARRAY8)
    y = torch.randn(3, *op.data_shape, generator=torch.Generator().manual_seed(0))
    c = prior.condition(op, y)
    assert c.shape == (3, 1, GRID8.nz, GRID8.nx)
    torch.testing.assert_close(c.abs().amax(dim=(1, 2, 3)), torch.ones(3))
    torch.testing.assert_close(c * op.adjoint(y).abs().amax(dim=(1, 2, 3), keepdim=True), op.adjoint(y))
    torch.testing.assert_close(prior.condition(op, 2.0 * y), c, rtol=0, atol=1e-6)
    torch.testing.assert_close(prior.condition(op, 1e-6 * y), c, rtol=0, atol=1e-6)
    assert torch.equal(prior.condition(op, torch.zeros_like(y)), torch.zeros_like(c))
    assert make_prior("marginal", grid=GRID8).condition(op, y) is None


def test_prepared_condition_gives_the_same_density_latents_and_images_as_the_image():
    prior = make_prior("conditional")
    x, cond = images(3), condition(3)
    features = prior.prepare_condition(cond)
    assert len(features) == len(prior.flow.cond_scales) and all(f.shape[0] == 3 for f in features)
    torch.testing.assert_close(prior.nll(x, features), prior.nll(x, cond), rtol=1e-12, atol=1e-12)
    latents = prior.encode(x, features)
    for a, b in zip(latents, prior.encode(x, cond)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prior.generate(latents, features), prior.generate(latents, cond), rtol=1e-12,
                               atol=1e-12)
    one = prior.prepare_condition(cond[:1])
    torch.testing.assert_close(prior.nll(x, one), prior.nll(x, cond[:1].expand(3, -1, -1, -1)), rtol=1e-12,
                               atol=1e-12)


def test_prepare_condition_rejects_what_is_not_a_condition_image_of_this_prior():
    conditional = make_prior("conditional")
    features = conditional.prepare_condition(condition(2))
    with pytest.raises(PAReconError, match="condition image"):
        conditional.prepare_condition(features)
    with pytest.raises(PAReconError, match="takes no condition"):
        make_prior("marginal").prepare_condition(condition(2))
    with pytest.raises(PAReconError, match="feature maps"):
        conditional.nll(images(2), features[:-1])
    with pytest.raises(PAReconError, match="batch"):
        conditional.nll(images(3), features)
    for bad in ([features[0], "c"], 3.0):
        with pytest.raises(PAReconError, match="list of feature maps"):
            conditional.nll(images(2), bad)


def test_condition_rejects_an_operator_of_another_grid():
    prior = make_prior("conditional", dtype=torch.float32)
    op = PATOperator(GRID8, ARRAY8)
    with pytest.raises(PAReconError, match="op"):
        prior.condition(op, torch.zeros(1, *op.data_shape))


@pytest.mark.parametrize("kind", KINDS)
def test_sample_shapes_seeding_temperature_and_broadcast_condition(kind):
    prior = make_prior(kind, dtype=torch.float32)
    cond = _cond(prior, 1, torch.float32)
    a = prior.sample(5, cond, generator=torch.Generator().manual_seed(3))
    b = prior.sample(5, cond, generator=torch.Generator().manual_seed(3))
    assert a.shape == (5, 1, GRID4.nz, GRID4.nx) and torch.equal(a, b)
    cold = prior.sample(2, cond, temperature=0.0)
    zeros = [torch.zeros(2, *s) for s in prior.latent_shapes()]
    torch.testing.assert_close(cold, prior.generate(zeros, None if cond is None else cond.expand(2, -1, -1, -1)))


def test_latent_shapes_follow_the_flow():
    prior = make_prior("marginal")
    assert prior.latent_shapes() == [(2, 2, 2), (8, 1, 1)]
    assert [tuple(z.shape[1:]) for z in prior.encode(images(1))] == prior.latent_shapes()


def test_misuse_raises_clear_errors():
    marginal, conditional = make_prior("marginal"), make_prior("conditional")
    x = images(2)
    with pytest.raises(PAReconError, match="takes no condition"):
        marginal.nll(x, condition(2))
    with pytest.raises(PAReconError, match="conditional"):
        conditional.nll(x)
    with pytest.raises(PAReconError, match="condition of shape"):
        conditional.nll(x, condition(3))
    with pytest.raises(PAReconError, match="images of shape"):
        marginal.nll(images(2, grid=GRID8))
    with pytest.raises(PAReconError, match="latents"):
        marginal.generate([torch.zeros(2, 2, 2, 2, dtype=torch.float64)])


@pytest.mark.parametrize(("override", "field"), [
    ({"logit_alpha": 0.05}, "logit_alpha"), ({"dequantization": "uniform"}, "dequantization"),
    ({"split_prior": "conditional"}, "split_prior"), ({"shape": (1, 8, 8)}, "shape"),
])
def test_flow_settings_a_prior_cannot_use_are_rejected(override, field):
    with pytest.raises(PAReconError) as err:
        flow_config_for("marginal", {**TINY_FLOW, **override}, GRID4)
    assert err.value.field == field


def test_implements_the_recon_layers_prior_protocol():
    op = PATOperator(GRID4, ARRAY8, dtype=torch.float64)
    for kind in KINDS:
        assert check_prior(make_prior(kind), op, conditional=kind == "conditional")
    with pytest.raises(PAReconError, match="trained for another grid") as err:
        check_prior(make_prior("marginal"), PATOperator(GRID8, ARRAY8))
    assert err.value.field == "op"


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_passes_give_the_eager_values_gradients_and_errors(kind):
    eager, compiled = make_prior(kind), make_prior(kind).compile_passes()
    cond = _cond(eager, 3)
    x = images(3, low=-0.3, high=1.3)
    latents = [torch.randn(3, *s, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
               for s in eager.latent_shapes()]
    for prior in (eager, compiled):
        xg, zg = x.clone().requires_grad_(), [z.clone().requires_grad_() for z in latents]
        nll, image = prior.nll(xg, cond), prior.generate(zg, cond)
        grads = torch.autograd.grad(nll.sum() + (image**2).sum(), [xg, *zg])
        if prior is eager:
            reference = [nll, image, *grads]
    for got, want in zip([nll, image, *grads], reference):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    with pytest.raises(PAReconError, match="images of shape"):
        compiled.nll(images(3, grid=GRID8), cond)
    assert check_prior(compiled, PATOperator(GRID4, ARRAY8), conditional=kind == "conditional")


@pytest.mark.parametrize("kind", KINDS)
def test_images_of_another_dtype_are_named(kind):
    prior = make_prior(kind)  # float64
    with pytest.raises(PAReconError, match="torch.float32 images on cpu for a torch.float64 prior on cpu") as err:
        prior.nll(images(2).float(), _cond(prior, 2))
    assert err.value.field == "x"
