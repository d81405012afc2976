"""Flow-model behaviour: bits/dim accounting, dequantization bounds, builders, conditioning, autocast."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import Tensor

from pa_recon.errors import PAReconError
from pa_recon.flows import (
    ActNorm,
    Flow,
    FlowConfig,
    GaussianPrior,
    UNetEncoder,
    UniformDequantization,
    VariationalDequantization,
    build_flow,
)
from pa_recon.flows.registry import GATED, N_BITS, SMALL, make_input, randomize_parameters


class UnitCubeDensity(GaussianPrior):
    """The uniform density on [0, 1)^D: log p = 0 there (a test stub)."""

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return z.new_zeros(z.shape[0])


def test_uniform_dequantization_of_a_uniform_model_gives_exactly_n_bits_per_dim():
    model = Flow([], UnitCubeDensity(3), (3, 4, 4), dequantization=UniformDequantization(8)).double()
    x = torch.randint(0, 256, (5, 3, 4, 4)).double()
    bpd = model.bits_per_dim(x, n_samples=4)
    torch.testing.assert_close(bpd, torch.full((5,), 8.0, dtype=torch.float64), rtol=0, atol=1e-12)


def test_uniform_dequantization_bits_with_a_gaussian_prior():
    """Identity flow, standard normal prior: bpd = n_bits + E[-log N(y)] / (D log 2) for the drawn y."""
    model = Flow([], GaussianPrior(1), (1, 2, 2), dequantization=UniformDequantization(4)).double()
    x = torch.randint(0, 16, (3, 1, 2, 2)).double()
    torch.manual_seed(0)
    bpd = model.bits_per_dim(x)
    torch.manual_seed(0)
    y = (x + torch.rand_like(x)) / 16
    nll = 0.5 * (y**2).flatten(1).sum(1) + 2 * math.log(2 * math.pi)
    torch.testing.assert_close(bpd, 4 + nll / (4 * math.log(2)))


def test_variational_dequantization_weight_is_the_change_of_variables_density_of_its_noise(monkeypatch):
    """log_weight = -D n log 2 - log q(u | x), log q(u | x) = log N(eps) - log|det ∂u/∂eps|, for the noise eps the
    dequantizer draws (injected here) and the Jacobian of eps -> u taken by autograd."""
    deq = randomize_parameters(VariationalDequantization(1, N_BITS, steps=2, subnet=SMALL, features=4),
                               scale=0.3).double()
    x = make_input((2, 1, 2, 4), "int", torch.float64)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def offsets(noise: Tensor) -> Tensor:
        monkeypatch.setattr(torch, "randn_like", lambda _: noise)
        return deq(x)[0] * deq.levels - x

    u = offsets(eps)
    log_weight = deq(x)[1]  # drawn with the same eps
    d = x[0].numel()
    jac = torch.autograd.functional.jacobian(offsets, eps).reshape(2, d, 2, d)
    log_noise = -0.5 * (eps**2).flatten(1).sum(1) - 0.5 * d * math.log(2 * math.pi)
    log_q = log_noise - torch.stack([torch.linalg.slogdet(jac[i, :, i])[1] for i in range(2)])
    assert ((u > 0) & (u < 1)).all()
    torch.testing.assert_close(log_weight, -d * N_BITS * math.log(2) - log_q, rtol=1e-10, atol=1e-10)


def test_variational_dequantization_noise_lies_in_the_unit_interval():
    model = randomize_parameters(build_flow(FlowConfig(
        (1, 4, 4), levels=1, steps=1, subnet=SMALL, dequantization="variational", n_bits=3, dequant_steps=2))).double()
    x = make_input((4, 1, 4, 4), "int", torch.float64)
    y, log_weight = model.dequantization(x)
    u = y * 8 - x
    assert ((u > 0) & (u < 1)).all() and torch.isfinite(log_weight).all()
    assert torch.equal(model.dequantization.quantize(y), x)


@pytest.mark.parametrize(
    ("config", "latents"),
    [
        (FlowConfig((1, 28, 28), "realnvp", levels=3, steps=3), [(2, 14, 14), (4, 7, 7), (4, 7, 7)]),
        (FlowConfig((3, 32, 32), "glow", levels=3, steps=2), [(6, 16, 16), (12, 8, 8), (48, 4, 4)]),
        (FlowConfig((1, 16, 16), "glow", levels=2, steps=1, downsample="haar_mrcnf"), [(2, 8, 8), (8, 4, 4)]),
    ],
)
def test_builder_latent_shapes(config, latents):
    model = build_flow(replace(config, subnet=SMALL))
    assert [tuple(s) for s in model.latent_shapes] == latents
    x = torch.rand(2, *config.shape)
    assert [tuple(z.shape[1:]) for z in model.encode(x)] == latents


def test_builder_layer_pattern():
    glow = build_flow(FlowConfig((1, 8, 8), "glow", levels=2, steps=2, subnet=SMALL, cond_channels=1,
                                 injector=True, split_prior="conditional", cond_features=2, encoder_width=4))
    names = [type(m).__name__ for m in glow.layers]
    step = ["ActNorm", "InvConv1x1", "AffineInjector", "AffineCoupling"]
    assert names == ["Squeeze", *step, *step, "Split", "Squeeze", *step, *step]
    assert glow.cond_scales == [1, 2] and glow.prior.context_channels == 2
    realnvp = build_flow(FlowConfig((1, 8, 8), "realnvp", levels=2, steps=2, subnet=GATED, logit_alpha=0.05))
    masks = [getattr(m, "mask", type(m).__name__) for m in realnvp.layers]
    assert masks == ["LogitTransform", "checkerboard", "checkerboard", "Squeeze", "channel", "channel", "Split",
                     "checkerboard", "checkerboard"]


@pytest.mark.parametrize(
    "changes",
    [{"levels": 4}, {"architecture": "maf"}, {"steps": 0}, {"downsample": "pool"}, {"split_prior": "mixture"}],
)
def test_builder_rejects_bad_configs(changes):
    with pytest.raises(PAReconError):
        build_flow(replace(FlowConfig((1, 8, 8), levels=2, subnet=SMALL), **changes))


def _conditional_model() -> Flow:
    return randomize_parameters(build_flow(FlowConfig(
        (2, 8, 8), "glow", levels=2, steps=1, subnet=SMALL, cond_channels=1, cond_features=3, encoder_width=4,
        split_prior="conditional", injector=True))).double()


def test_condition_as_image_feature_list_or_broadcast_batch():
    model = _conditional_model()
    x, c = torch.randn(3, 2, 8, 8, dtype=torch.float64), torch.randn(1, 1, 8, 8, dtype=torch.float64)
    from_image = model.log_prob(x, c)
    torch.testing.assert_close(model.log_prob(x, model.encoder(c)), from_image)
    torch.testing.assert_close(model.log_prob(x, c.expand(3, -1, -1, -1)), from_image)
    with pytest.raises(PAReconError):
        model.log_prob(x, model.encoder(c)[:1])
    with pytest.raises(PAReconError):
        model.log_prob(x, torch.randn(2, 1, 8, 8, dtype=torch.float64))


def test_conditional_sampling_at_zero_temperature_is_deterministic_and_condition_dependent():
    model = _conditional_model()
    c = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    a, b = model.sample(2, c, temperature=0.0), model.sample(2, c, temperature=0.0)
    assert torch.equal(a, b) and torch.equal(a[0], a[1])
    assert not torch.equal(a, model.sample(2, c + 1, temperature=0.0))


def test_flow_without_encoder_takes_a_single_scale_feature_map():
    model = randomize_parameters(build_flow(FlowConfig(
        (2, 4, 4), "glow", levels=1, steps=1, subnet=SMALL, cond_channels=1, cond_features=3))).double()
    bare = Flow(list(model.layers), model.prior, (2, 4, 4))
    x, c = torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.randn(2, 1, 4, 4, dtype=torch.float64)
    feats = model.encoder(c)
    torch.testing.assert_close(bare.log_prob(x, feats[0]), model.log_prob(x, c))
    with pytest.raises(PAReconError, match=r"^encoder: scales \[0, 1\] differ from the flow's \[1\]$") as err:
        Flow(list(model.layers), model.prior, (2, 4, 4), encoder=UNetEncoder(1, 3, [0, 1], width=4))
    assert err.value.field == "encoder"


def test_flow_refuses_a_prior_of_other_channels():
    model = build_flow(FlowConfig((2, 4, 4), "glow", levels=1, steps=1, subnet=SMALL))
    with pytest.raises(PAReconError, match=r"^prior: has 3 channels, the flow ends with 8$") as err:
        Flow(list(model.layers), GaussianPrior(3), (2, 4, 4))
    assert err.value.field == "prior"


def test_actnorm_in_a_fresh_model_initialises_on_the_first_batch_and_is_saved():
    model = build_flow(FlowConfig((1, 8, 8), "glow", levels=1, steps=1, subnet=SMALL))
    model.log_prob(torch.randn(4, 1, 8, 8))
    state = model.state_dict()
    flags = [k for k in state if k.endswith("initialized")]
    assert flags and all(bool(state[k]) for k in flags)
    assert any(isinstance(m, ActNorm) for m in model.layers)


def test_log_prob_under_bfloat16_autocast_stays_float32_and_close():
    """Both parts of log p, the log-det (about -40 nats here) and the base density, stay within a fraction of a nat."""
    torch.manual_seed(0)
    model = randomize_parameters(build_flow(FlowConfig((2, 8, 8), "glow", levels=2, steps=2, subnet=SMALL)))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ActNorm):
                m.log_scale.sub_(0.1)  # a log-det far from 0, so dropping it cannot hide within the tolerance
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    exact = model(x)
    assert (exact.logdet < -20).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        back = model.inverse(out.latents).y
    assert out.logdet.dtype == out.log_prior.dtype == torch.float32
    assert all(z.dtype == torch.float32 for z in out.latents)
    torch.testing.assert_close(out.logdet, exact.logdet, rtol=0, atol=0.25)
    torch.testing.assert_close(out.log_prior, exact.log_prior, rtol=0, atol=0.5)
    assert (back - x).abs().max() <= 1e-4


def test_config_round_trips_through_a_plain_dict():
    config = FlowConfig((1, 8, 8), "realnvp", levels=2, subnet=GATED, cond_channels=1, logit_alpha=0.05)
    plain = config.to_dict()
    assert plain["subnet"] == {"kind": "gated", "hidden": 8, "blocks": 1}
    plain["shape"] = list(plain["shape"])  # as YAML would give it
    assert FlowConfig.from_dict(plain) == config
    with pytest.raises(PAReconError, match=r"^level: unknown flow settings \['level'\]"):
        FlowConfig.from_dict({**plain, "level": 3})
    with pytest.raises(PAReconError, match=r"^subnet.width: unknown subnet settings \['width'\]; known: \['blocks'"):
        FlowConfig.from_dict({**plain, "subnet": {"kind": "resnet", "width": 3}})
