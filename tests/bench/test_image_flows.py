"""Image-flow benchmark logic: the MNIST layouts, the bits/dim loss accounting, importance-sampled evaluation, data
splits and layout errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pa_recon.errors import PAReconError
from pa_recon.flows import (
    ActNorm,
    AffineCoupling,
    FlowConfig,
    InvConv1x1,
    LogitTransform,
    Split,
    Squeeze,
    SubnetConfig,
    UniformDequantization,
    VariationalDequantization,
    build_flow,
)
from pa_recon.bench.image_flows import (
    bits_per_dim_bounds,
    bits_per_dim_loss,
    build_image_flow,
    count_parameters,
    evaluate_bits_per_dim,
    image_tensor,
    save_split_resamples,
)

PARAMS = Path(__file__).resolve().parents[2] / "pipelines" / "mnist" / "params.yaml"
MNIST = (1, 28, 28)
TINY = {"layers": [{"checkerboard": 2, "subnet": {"hidden": 4, "blocks": 1}}, "squeeze",
                   {"channel": 1, "subnet": {"hidden": 4, "blocks": 1}}, "split"]}


@pytest.fixture(scope="module")
def layouts() -> dict:
    return yaml.safe_load(PARAMS.read_text())["models"]


def structure(model: torch.nn.Module) -> list[str]:
    """The flow's modules in data-to-latent order, couplings named by their mask."""
    return [f"{type(m).__name__}:{m.mask}" if isinstance(m, AffineCoupling) else type(m).__name__
            for m in model.layers]


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-identity weights (the zero-initialised last convolutions included), so the checks prove something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def integer_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed)).float()


def test_simple_and_vardeq_are_eight_checkerboard_couplings_at_full_resolution(layouts):
    simple, vardeq = (build_image_flow(layouts[name], MNIST) for name in ("simple", "vardeq"))
    expected = ["LogitTransform", *["AffineCoupling:checkerboard"] * 8]
    assert structure(simple) == structure(vardeq) == expected
    assert simple.latent_shapes == vardeq.latent_shapes == [MNIST]
    assert type(simple.dequantization) is UniformDequantization
    assert isinstance(vardeq.dequantization, VariationalDequantization)
    couplings = [m for m in vardeq.dequantization.noise_flow.layers if isinstance(m, AffineCoupling)]
    assert [c.mask for c in couplings] == ["checkerboard"] * 4
    # The tutorial's 556 312 parameters, less its 8 learned scale bounds (here a fixed tanh bound).
    assert count_parameters(simple) == 556_312 - 8
    # Where build_flow fits (one RealNVP level of 8 couplings), it builds the very same model.
    same = build_flow(FlowConfig(MNIST, "realnvp", levels=1, steps=8, subnet=SubnetConfig("gated", 32, 3),
                                 dequantization="uniform", logit_alpha=1e-5))
    assert structure(same) == expected and count_parameters(same) == count_parameters(simple)


def test_multiscale_squeezes_splits_and_widens_like_the_tutorial(layouts):
    model = build_image_flow(layouts["multiscale"], MNIST)
    assert structure(model) == ["LogitTransform", *["AffineCoupling:checkerboard"] * 2, "Squeeze",
                                *["AffineCoupling:channel"] * 2, "Split", "Squeeze", *["AffineCoupling:channel"] * 4]
    assert model.latent_shapes == [(2, 14, 14), (8, 7, 7)]
    couplings = [m for m in model.layers if isinstance(m, AffineCoupling)]
    assert [c.channels for c in couplings] == [1, 1, 4, 4, 8, 8, 8, 8]
    assert [c.parity for c in couplings] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert [c.net.net[0].out_channels for c in couplings] == [32, 32, 48, 48, 64, 64, 64, 64]
    assert isinstance(model.dequantization, VariationalDequantization)


def test_glow_layout_and_the_smoke_override(layouts):
    model = build_image_flow(layouts["glow"], MNIST, SubnetConfig("gated", 8, 1))
    kinds = structure(model)
    assert kinds.count("ActNorm") == kinds.count("InvConv1x1") == 24 and kinds.count("Squeeze") == 2
    assert [m.prior.context_channels for m in model.layers if isinstance(m, Split)] == [2]
    assert model.latent_shapes == [(2, 14, 14), (8, 7, 7)]
    nets = [m.net for m in model.modules() if isinstance(m, AffineCoupling)]
    assert nets and all(n.net[0].out_channels == 8 for n in nets)
    assert all(isinstance(m, (ActNorm, InvConv1x1, AffineCoupling, Split, Squeeze, LogitTransform))
               for m in model.layers)


@pytest.mark.parametrize(("entry", "message"), [
    ({"checkerboard": 0}, "positive integer"),
    ({"channel": 2, "glow": 1}, "expected squeeze"),
    ({"split": "learned"}, "standard or conditional"),
    ("shuffle", "expected squeeze"),
    ({"checkerboard": 1, "subnet": {"width": 3}}, "width"),
])
def test_bad_layout_entries_are_named(entry, message):
    with pytest.raises(PAReconError, match=message) as err:
        build_image_flow({"layers": [entry]}, MNIST)
    assert err.value.field.startswith("layers[0]")


def test_bad_layouts_are_refused():
    with pytest.raises(PAReconError, match="odd size"):
        build_image_flow({"layers": ["squeeze", "squeeze", "squeeze"]}, MNIST)
    with pytest.raises(PAReconError, match="unknown"):
        build_image_flow({"layers": [], "depth": 3}, MNIST)
    with pytest.raises(PAReconError, match="uniform or variational"):
        build_image_flow({"layers": [], "dequantization": {"kind": "none"}}, MNIST)


def test_loss_is_bits_per_dim_with_the_8_bit_offset():
    model = build_image_flow({**TINY, "logit_alpha": None}, (1, 4, 4))
    randomise(model)
    x = integer_images(5, (1, 4, 4))
    torch.manual_seed(3)
    loss, _ = bits_per_dim_loss(model, x.to(torch.uint8))
    torch.manual_seed(3)
    y = (x + torch.rand_like(x)) / 256  # the same uniform draws
    out = model(y)
    continuous_bpd = -(out.logdet + out.log_prior) / (16 * math.log(2))
    assert loss.item() == pytest.approx((continuous_bpd + 8).mean().item(), rel=1e-6)
    torch.manual_seed(3)
    assert loss.item() == pytest.approx((-model.log_prob(x) / (16 * math.log(2))).mean().item(), rel=1e-6)


def test_importance_sampling_with_one_draw_is_the_bound_and_with_eight_never_worse():
    model = build_image_flow({**TINY, "dequantization": {"kind": "variational", "steps": 2, "features": 4,
                                                         "subnet": {"hidden": 4, "blocks": 1}}}, (1, 4, 4))
    randomise(model)
    x = integer_images(6, (1, 4, 4), seed=1)
    with torch.no_grad():
        torch.manual_seed(0)
        importance, single = bits_per_dim_bounds(model.log_weights(x, n_samples=1), 16)
        torch.manual_seed(0)
        assert torch.equal(importance, single)
        assert torch.allclose(importance.float(), model.bits_per_dim(x), rtol=1e-6)
        importance, single = bits_per_dim_bounds(model.log_weights(x, n_samples=8), 16)
    assert torch.all(importance <= single) and torch.any(importance < single)
    result = evaluate_bits_per_dim(model, x.to(torch.uint8), n_samples=1, batch_size=4)
    assert result.n_images == 6 and result.importance == pytest.approx(result.single_draw)


def test_image_tensor_layouts():
    gray = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert torch.equal(image_tensor(gray), torch.from_numpy(gray)[:, None])
    rgb = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    assert image_tensor(rgb).shape == (2, 3, 3, 4) and image_tensor(rgb)[1, 2, 0, 1] == rgb[1, 0, 1, 2]
    with pytest.raises(PAReconError, match="uint8"):
        image_tensor(gray.astype(np.float32))


def test_split_resampling_needs_a_split(tmp_path):
    model = build_image_flow({"layers": [{"checkerboard": 1, "subnet": {"hidden": 4, "blocks": 1}}]}, (1, 4, 4))
    with pytest.raises(PAReconError, match="0 split latent"):
        save_split_resamples(model, integer_images(2, (1, 4, 4)), tmp_path / "x.png", resampled=1)
