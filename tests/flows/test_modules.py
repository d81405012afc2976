"""Module-specific properties beyond the generic registry contract."""

from __future__ import annotations

import math

import pytest
import torch

from pa_recon.errors import PAReconError
from pa_recon.flows.subnets import ChannelNorm
from pa_recon.flows import (
    ActNorm,
    AffineCoupling,
    GaussianPrior,
    HaarDownsample,
    InvConv1x1,
    LabelEncoder,
    LogitTransform,
    RRDBEncoder,
    Squeeze,
    SubnetConfig,
    UNetEncoder,
    one_hot_condition,
)
from pa_recon.flows.registry import SMALL, randomize_parameters
from pa_recon.flows.coupling import checkerboard, pack_checkerboard, unpack_checkerboard
from pa_recon.flows.subnets import make_subnet


def _jacobian(fn, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(lambda v: fn(v.view_as(x)).reshape(-1), x.reshape(-1))


def test_actnorm_data_dependent_init_standardises_the_first_batch():
    x = 3.0 + 2.5 * torch.randn(8, 3, 5, 5, dtype=torch.float64)
    x[:, 1] *= 10
    z, _ = ActNorm(3).double()(x)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-6,
                               rtol=0)


def test_actnorm_initialises_once_and_not_after_loading():
    first, second = torch.randn(4, 2, 3, 3), 5 + torch.randn(4, 2, 3, 3)
    norm = ActNorm(2)
    norm(first)
    params = [p.clone() for p in norm.parameters()]
    norm(second)
    assert all(torch.equal(a, b) for a, b in zip(params, norm.parameters()))
    loaded = ActNorm(2)
    loaded.load_state_dict(norm.state_dict())
    assert torch.equal(loaded(second)[0], norm(second)[0])


def test_lu_conv1x1_is_the_dense_matrix_with_that_determinant():
    conv = randomize_parameters(InvConv1x1(4), scale=0.3).double()
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    w = conv.weight()
    z, logdet = conv(x)
    torch.testing.assert_close(z, torch.einsum("ij,bjhw->bihw", w, x))
    torch.testing.assert_close(logdet, torch.full((2,), 15 * torch.linalg.slogdet(w)[1].item(), dtype=torch.float64))
    torch.testing.assert_close(conv.inverse_weight() @ w, torch.eye(4, dtype=torch.float64))


def test_squeeze_layout():
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).view(1, 2, 4, 6)
    z, _ = Squeeze()(x)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                assert torch.equal(z[0, 4 * c + 2 * i + j], x[0, c, i::2, j::2])


def test_orthonormal_haar_is_an_orthogonal_map():
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    jac = _jacobian(lambda v: HaarDownsample("orthonormal")(v)[0], x)
    torch.testing.assert_close(jac @ jac.T, torch.eye(32, dtype=torch.float64))


def test_mrcnf_haar_low_band_is_the_coarse_image_and_map_is_unimodular():
    haar = HaarDownsample("mrcnf")
    assert haar.a == 4.0 and haar.c == pytest.approx(2 ** (2 / 3))
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    z, logdet = haar(x)
    torch.testing.assert_close(z[:, :3], torch.nn.functional.avg_pool2d(x, 2))
    assert logdet.abs().max() < 1e-12
    d = z[:, 3:6]  # first detail band: (top row - bottom row) / c
    torch.testing.assert_close(d, (x[:, :, 0::2] - x[:, :, 1::2]).view(2, 3, 2, 3, 2).sum(-1) / 2 ** (2 / 3))
    jac = _jacobian(lambda v: haar(v)[0], x[:1])
    assert torch.linalg.det(jac).item() == pytest.approx(1.0, abs=1e-12)


def test_fresh_coupling_is_identity_and_checkerboard_keeps_its_pixels():
    x = torch.randn(2, 2, 4, 4)
    z, logdet = AffineCoupling(2, "checkerboard", 1, SMALL)(x)
    assert torch.equal(z, x) and torch.equal(logdet, torch.zeros(2))
    coupling = randomize_parameters(AffineCoupling(2, "checkerboard", 1, SMALL), scale=0.5)
    z, _ = coupling(x)
    kept = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 == 1
    assert torch.equal(z[..., kept], x[..., kept]) and not torch.equal(z[..., ~kept], x[..., ~kept])


@pytest.mark.parametrize("scale", ["tanh", "sigmoid"])
def test_coupling_scale_stays_bounded_for_huge_network_outputs(scale):
    coupling = randomize_parameters(AffineCoupling(2, "channel", 0, SMALL, scale=scale, scale_bound=1.5), scale=50.0)
    x = 100 * torch.randn(2, 2, 4, 4)
    z, logdet = coupling(x)
    assert torch.isfinite(z).all()
    assert logdet.max() <= (1.5 if scale == "tanh" else 0.0) * 16 and logdet.min() >= -1.5 * 16
    assert (coupling.inverse(z)[0] - x).abs().max() <= 1e-3 * x.abs().max()


def test_conditional_coupling_depends_on_the_condition():
    coupling = randomize_parameters(AffineCoupling(2, "channel", 0, SMALL, cond_channels=3), scale=0.3)
    x, c = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 4, 4)
    assert not torch.equal(coupling(x, c)[0], coupling(x, c + 1)[0])


@pytest.mark.parametrize(("build", "field", "message"), [
    (lambda: AffineCoupling(1, "channel"), "channels", "channel-mask coupling needs at least 2 channels, got 1"),
    (lambda: AffineCoupling(2, "stripes"), "mask", "must be one of 'checkerboard', 'checkerboard_packed', 'channel', "
                                                   "got 'stripes'"),
    (lambda: AffineCoupling(2, "channel", parity=2), "parity", "must be one of 0, 1, got 2"),
    (lambda: AffineCoupling(2, "channel", scale="exp"), "scale", "must be one of 'tanh', 'sigmoid', got 'exp'"),
    (lambda: HaarDownsample("daubechies"), "variant", "unknown Haar variant 'daubechies'"),
    (lambda: LogitTransform(0.5), "alpha", r"alpha must lie in \[0, 0.5\), got 0.5"),
    (lambda: make_subnet(SubnetConfig("mlp"), 2, 2), "subnet.kind", "unknown sub-network kind 'mlp'"),
], ids=["one-channel-channel-mask", "unknown-mask", "bad-parity", "bad-scale", "unknown-haar-variant", "logit-alpha", "unknown-subnet"])
def test_bad_settings_raise_user_errors(build, field, message):
    with pytest.raises(PAReconError, match=message) as err:
        build()
    assert err.value.field == field


def test_gaussian_prior_matches_torch_distributions_and_temperature():
    prior = randomize_parameters(GaussianPrior(2, 3, SMALL), scale=0.3).double()
    z, ctx = torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    mean, log_std = prior.params(ctx, z)
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(prior.log_prob(z, ctx), ref)
    torch.testing.assert_close(prior.sample(z, ctx, temperature=0.0), mean)
    standard = GaussianPrior(2)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(z.float()).flatten(1).sum(1)
    torch.testing.assert_close(standard.log_prob(z.float()), ref)


def test_logit_transform_log_det_formula():
    x = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]]], dtype=torch.float64)
    y, logdet = LogitTransform(0.1)(x)
    p = 0.1 + 0.8 * x
    torch.testing.assert_close(y, torch.log(p / (1 - p)))
    torch.testing.assert_close(logdet, (math.log(0.8) - torch.log(p * (1 - p))).sum().view(1))


@pytest.mark.parametrize("scales", [[0, 1, 2], [1, 3]])
def test_unet_encoder_returns_one_map_per_scale(scales):
    enc = UNetEncoder(2, 5, scales, width=4)
    feats = enc(torch.randn(3, 2, 16, 8))
    assert [tuple(f.shape) for f in feats] == [(3, 5, 16 >> s, 8 >> s) for s in scales]
    with pytest.raises(PAReconError):
        enc(torch.randn(3, 2, 14, 8))
    with pytest.raises(PAReconError):
        enc(torch.randn(3, 1, 16, 8))
    with pytest.raises(PAReconError):
        UNetEncoder(2, 5, [0, 3], depth=2)


@pytest.mark.parametrize("upscale", [1, 4])
def test_rrdb_encoder_returns_one_map_per_scale(upscale):
    enc = RRDBEncoder(3, 5, [0, 1, 3], width=4, blocks=1, growth=4, upscale=upscale)
    feats = enc(torch.randn(2, 3, 32 // upscale, 16 // upscale))
    assert [tuple(f.shape) for f in feats] == [(2, 5, 32 >> s, 16 >> s) for s in (0, 1, 3)]
    with pytest.raises(PAReconError):
        enc(torch.randn(2, 3, 36 // upscale, 16 // upscale))


def test_label_encoder_embeds_each_class_as_constant_maps_per_scale():
    enc = randomize_parameters(LabelEncoder(4, 3, [0, 2], (8, 4)), scale=1.0)
    labels = torch.tensor([2, 0, 2])
    feats = enc(one_hot_condition(labels, 4))
    assert [tuple(f.shape) for f in feats] == [(3, 3, 8, 4), (3, 3, 2, 1)]
    for f, s in zip(feats, ["0", "2"]):
        conv = enc.embed[s]
        expected = conv.weight[:, :, 0, 0].T[labels] + conv.bias  # the class's column of the 1x1 convolution
        torch.testing.assert_close(f, expected[:, :, None, None].expand_as(f))
    assert not torch.equal(feats[0][0], feats[0][1]) and torch.equal(feats[0][0], feats[0][2])


def test_label_condition_rejects_bad_labels_and_shapes():
    assert one_hot_condition(torch.tensor([1, 0]), 3)[:, :, 0, 0].tolist() == [[0, 1, 0], [1, 0, 0]]
    for bad in (torch.tensor([3]), torch.tensor([-1]), torch.tensor([0.0]), torch.zeros(2, 1, dtype=torch.long)):
        with pytest.raises(PAReconError):
            one_hot_condition(bad, 3)
    enc = LabelEncoder(3, 2, [0], (4, 4))
    with pytest.raises(PAReconError):
        enc(torch.zeros(2, 3, 4, 4))
    with pytest.raises(PAReconError):
        enc(torch.zeros(2, 4, 1, 1))
    with pytest.raises(PAReconError):
        LabelEncoder(3, 2, [0, 3], (4, 4))


def test_channel_norm_normalises_each_pixel_over_channels():
    norm = ChannelNorm(5).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.normal_()
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    mean, var = x.mean(dim=1, keepdim=True), x.var(dim=1, unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight[:, None, None] + norm.bias[:, None, None]
    torch.testing.assert_close(norm(x), expected)


@pytest.mark.parametrize("parity", [0, 1])
def test_packed_checkerboard_keeps_the_mask_pixels_in_column_order(parity):
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).view(2, 3, 4, 6)
    kept, moved = pack_checkerboard(x, parity)
    mask = checkerboard(4, 6, parity, x).bool().expand_as(x)
    assert kept.shape == moved.shape == (2, 3, 4, 3)
    assert torch.equal(kept.flatten(), x[mask]) and torch.equal(moved.flatten(), x[~mask])
    assert torch.equal(unpack_checkerboard(kept, moved, parity), x)
    with pytest.raises(PAReconError, match="even width"):
        pack_checkerboard(x[..., :5], parity)


@pytest.mark.parametrize("parity", [0, 1])
def test_packed_and_masked_checkerboard_couplings_transform_the_same_pixels(parity):
    x = torch.randn(3, 2, 4, 6, dtype=torch.float64)
    keep = checkerboard(4, 6, parity, x).bool().expand_as(x)
    for mask in ("checkerboard", "checkerboard_packed"):
        coupling = randomize_parameters(AffineCoupling(2, mask, parity, SMALL).double(), scale=0.3)
        z, _ = coupling(x)
        assert torch.equal(z[keep], x[keep]) and not torch.allclose(z[~keep], x[~keep])
