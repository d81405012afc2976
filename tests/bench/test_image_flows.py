"""Image-flow benchmark logic: the MNIST and CIFAR-10 layouts, class-conditional flows (label condition, class
grids, label swap), the bits/dim loss accounting, importance-sampled evaluation, data splits and layout errors."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pa_recon.errors import PAReconError
from pa_recon.data.cifar import BATCH_NAMES
from pa_recon.flows import (
    ActNorm,
    AffineCoupling,
    AffineInjector,
    Flow,
    FlowConfig,
    GaussianPrior,
    InvConv1x1,
    LabelEncoder,
    LogitTransform,
    Split,
    Squeeze,
    SubnetConfig,
    UniformDequantization,
    VariationalDequantization,
    build_flow,
    one_hot_condition,
)
from pa_recon.bench.image_flows import (
    bits_per_dim_loss,
    build_image_flow,
    evaluate_bits_per_dim,
    label_swap,
    ImageSplits,
    load_image_splits,
    same_class_pairs,
    sample_grid,
    save_split_resamples,
    train_image_flow,
)
from pa_recon.bench.runs import count_parameters
from pa_recon.flows.registry import randomize_parameters
from pa_recon.train import TrainConfig

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
PARAMS = PIPELINES / "mnist" / "params.yaml"
MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
TINY = {"layers": [{"checkerboard": 2, "subnet": {"hidden": 4, "blocks": 1}}, "squeeze",
                   {"channel": 1, "subnet": {"hidden": 4, "blocks": 1}}, "split"]}


@pytest.fixture(scope="module")
def layouts() -> dict:
    return yaml.safe_load(PARAMS.read_text())["models"]


def structure(model: torch.nn.Module) -> list[str]:
    """The flow's modules in data-to-latent order, couplings named by their mask."""
    return [f"{type(m).__name__}:{m.mask}" if isinstance(m, AffineCoupling) else type(m).__name__
            for m in model.layers]


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
    ({"checkerboard": 0}, "checkerboard: must be an integer >= 1, got 0"),
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


def test_a_bad_layout_leaves_an_earlier_run_in_its_folder_alone(tmp_path):
    images, labels = integer_images(8, MNIST).to(torch.uint8), torch.zeros(8, dtype=torch.int64)
    splits = ImageSplits(train=images[:4], val=images[4:], test=images[4:], train_labels=labels[:4],
                         val_labels=labels[4:], test_labels=labels[4:])
    config = TrainConfig(out_dir=str(tmp_path), max_steps=1, batch_size=4, device="cpu", progress=False,
                         tracking=False, sample_every=0)
    train_image_flow(TINY, config, splits)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(PAReconError, match=r"layers\[0\]"):
        train_image_flow({"layers": [{"checkerbord": 2}]}, config, splits)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_loss_is_bits_per_dim_with_the_8_bit_offset():
    model = build_image_flow({**TINY, "logit_alpha": None}, (1, 4, 4))
    randomize_parameters(model)
    x = integer_images(5, (1, 4, 4))
    torch.manual_seed(3)
    loss, _ = bits_per_dim_loss(model, (x.to(torch.uint8), torch.zeros(5, dtype=torch.long)))
    torch.manual_seed(3)
    y = (x + torch.rand_like(x)) / 256  # the same uniform draws
    out = model(y)
    continuous_bpd = -(out.logdet + out.log_prior) / (16 * math.log(2))
    assert loss.item() == pytest.approx((continuous_bpd + 8).mean().item(), rel=1e-6)
    torch.manual_seed(3)
    assert loss.item() == pytest.approx((-model.log_prob(x) / (16 * math.log(2))).mean().item(), rel=1e-6)


class LogitNormalOffsets(GaussianPrior):
    """A density on [0, 1)^D whose 2^(D n) bins each hold mass 2^(-D n): the offsets u = frac(2^n y) in the bins are
    i.i.d. logit-normal, logit(u) ~ N(0, std^2). A test stub."""

    def __init__(self, channels: int, n_bits: int, std: float) -> None:
        super().__init__(channels)
        self.levels, self.std = 2**n_bits, std

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        u = z * self.levels - torch.floor(z * self.levels)
        t = torch.logit(u) / self.std
        log_density = -0.5 * t**2 - math.log(self.std * math.sqrt(2 * math.pi)) - torch.log(u * (1 - u))
        return log_density.flatten(1).sum(1)


def test_importance_sampled_bits_per_dim_converge_to_the_exact_value_above_which_the_bound_stays():
    """Under LogitNormalOffsets every image has log P(x) = -D n log 2, i.e. exactly n bits/dim: with the variational
    dequantizer as proposal, 4096 importance draws must reach it, and the single-draw bound must not go below it."""
    dequantizer = randomize_parameters(
        VariationalDequantization(1, 8, steps=2, subnet=SubnetConfig("resnet", 4, 1), features=4), scale=0.1)
    model = Flow([], LogitNormalOffsets(1, 8, std=0.8), (1, 2, 4), dequantization=dequantizer)
    x = integer_images(3, (1, 2, 4), seed=1).to(torch.uint8)
    torch.manual_seed(0)
    result = evaluate_bits_per_dim(model, x, torch.zeros(3, dtype=torch.long), n_samples=4096, batch_size=2)
    assert result.n_images == 3 and result.n_samples == 4096
    assert result.importance == pytest.approx(8.0, abs=0.02)
    assert result.single_draw > 8.1


def test_split_resampling_needs_a_split(tmp_path):
    model = build_image_flow({"layers": [{"checkerboard": 1, "subnet": {"hidden": 4, "blocks": 1}}]}, (1, 4, 4))
    with pytest.raises(PAReconError, match="0 split latent"):
        save_split_resamples(model, integer_images(2, (1, 4, 4)), tmp_path / "x.png", resampled=1)


# ------------------------------------------------------------------------------------------- CIFAR-10 layouts
@pytest.fixture(scope="module")
def cifar_layouts() -> dict:
    return yaml.safe_load((PIPELINES / "cifar10" / "params.yaml").read_text())["models"]


def test_cifar_models_have_three_levels(cifar_layouts):
    small = SubnetConfig("gated", 4, 1)
    realnvp = build_image_flow(cifar_layouts["realnvp"], CIFAR, small)
    assert realnvp.latent_shapes == [(6, 16, 16), (12, 8, 8), (12, 8, 8)] and structure(realnvp)[:3] == ["LogitTransform", "ActNorm",
                                                                             "AffineCoupling:checkerboard"]
    assert type(realnvp.dequantization) is UniformDequantization
    for name, dequantizer in (("glow", UniformDequantization), ("glow_vardeq", VariationalDequantization)):
        glow = build_image_flow(cifar_layouts[name], CIFAR, small)
        assert glow.latent_shapes == [(6, 16, 16), (12, 8, 8), (48, 4, 4)] and type(glow.dequantization) is dequantizer
        kinds = structure(glow)
        assert kinds.count("Squeeze") == 3 and kinds.count("ActNorm") == kinds.count("InvConv1x1") > 0
        assert "LogitTransform" not in kinds


# ------------------------------------------------------------------------------------------ class-conditional
COND = {"condition": {"classes": 3, "features": 2, "subnet": {"hidden": 4, "blocks": 1}},
        "layers": [{"checkerboard": 1, "subnet": {"hidden": 4, "blocks": 1}}, "squeeze",
                   {"glow": 1, "subnet": {"hidden": 4, "blocks": 1}},
                   {"split": "conditional", "subnet": {"hidden": 4, "blocks": 1}},
                   {"channel": 1, "subnet": {"hidden": 4, "blocks": 1}}]}


def conditional_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_image_flow(COND, (1, 4, 4))
    randomize_parameters(model, seed=seed)
    return model


def test_conditional_layout_feeds_the_label_to_every_coupling_injector_and_prior():
    model = conditional_model()
    assert isinstance(model.encoder, LabelEncoder) and model.cond_scales == [0, 1]
    assert "AffineInjector" in structure(model)
    assert all(m.cond_channels == 2 for m in model.layers if isinstance(m, (AffineCoupling, AffineInjector, Split)))
    assert isinstance(model.prior, GaussianPrior) and model.prior.context_channels == 2
    x = integer_images(4, (1, 4, 4)).to(torch.uint8)
    labels = torch.tensor([0, 1, 2, 0])
    torch.manual_seed(1)
    loss, _ = bits_per_dim_loss(model, (x, labels))
    torch.manual_seed(1)
    assert loss.item() == pytest.approx(model.bits_per_dim(x.float(), one_hot_condition(labels, 3)).mean().item(),
                                        rel=1e-6)
    torch.manual_seed(1)
    other, _ = bits_per_dim_loss(model, (x, (labels + 1) % 3))
    assert abs(other.item() - loss.item()) > 1e-4
    with pytest.raises(PAReconError):
        bits_per_dim_loss(model, (x, torch.tensor([0, 1, 3, 0])))


def test_unconditional_flows_ignore_labels():
    model = build_image_flow(TINY, (1, 4, 4))
    randomize_parameters(model)
    x = integer_images(3, (1, 4, 4)).to(torch.uint8)
    torch.manual_seed(0)
    a, _ = bits_per_dim_loss(model, (x, torch.tensor([0, 1, 2])))
    torch.manual_seed(0)
    b, _ = bits_per_dim_loss(model, (x, torch.tensor([5, 5, 5])))
    assert a.item() == b.item()


def test_class_grid_at_zero_temperature_is_one_image_per_class():
    model = conditional_model().eval()
    with torch.no_grad():
        images, nrow = sample_grid(model, 7, temperature=0.0)
    assert nrow == 2 and images.shape == (6, 1, 4, 4)
    assert torch.equal(images[0], images[1]) and torch.equal(images[4], images[5])
    assert not torch.equal(images[0], images[2]) or not torch.equal(images[2], images[4])


def test_label_swap_under_the_own_label_gives_back_the_image():
    model = conditional_model().eval()
    x = integer_images(3, (1, 4, 4), seed=2)
    labels = torch.tensor([2, 0, 1])
    swapped = label_swap(model, x, labels)
    assert swapped.shape == (3, 3, 1, 4, 4)
    for i, label in enumerate(labels.tolist()):
        assert torch.equal(swapped[i, label], x[i])
    assert not torch.equal(swapped[0, 0], x[0])
    with pytest.raises(PAReconError, match="class-conditional"):
        label_swap(build_image_flow(TINY, (1, 4, 4)), x, labels)


def test_same_class_pairs():
    a, b = same_class_pairs(torch.tensor([1, 2, 1, 3, 2, 1, 1, 3]), 3)
    assert a.tolist() == [0, 1, 5] and b.tolist() == [2, 4, 6]
    assert same_class_pairs(torch.tensor([0, 1, 2]), 4)[0].numel() == 0


@pytest.mark.parametrize(("layout", "field"), [
    ({**COND, "condition": {"classes": 3}}, "condition"),
    ({**COND, "condition": {"classes": 1, "features": 2}}, "scales"),
    ({"layers": [{"checkerboard": 1, "actnorm": "yes"}]}, "layers[0].actnorm"),
    ({"layers": ["squeeze", {"glow": 1, "actnorm": True}]}, "layers[1]"),
    ({"layers": ["squeeze", {"channel": 1, "packed": True}]}, "layers[1]"),
    ({"layers": [{"checkerboard": 1, "packed": 1}]}, "layers[0].packed"),
])
def test_bad_condition_and_actnorm_settings_are_named(layout, field):
    with pytest.raises(PAReconError) as err:
        build_image_flow(layout, (1, 4, 4))
    assert err.value.field == field


def test_packed_option_builds_packed_checkerboard_couplings_with_the_same_parameters():
    layer = {"checkerboard": 2, "subnet": {"hidden": 4, "blocks": 1}}
    packed = build_image_flow({"layers": [{**layer, "packed": True}]}, (1, 4, 4))
    masked = build_image_flow({"layers": [layer]}, (1, 4, 4))
    assert [m.mask for m in packed.layers if isinstance(m, AffineCoupling)] == ["checkerboard_packed"] * 2
    assert count_parameters(packed) == count_parameters(masked)


def test_actnorm_option_puts_an_actnorm_before_each_coupling():
    model = build_image_flow({"layers": [{"channel": 2, "actnorm": True, "subnet": {"hidden": 4, "blocks": 1}}]},
                             (2, 4, 4))
    assert structure(model) == ["LogitTransform", "ActNorm", "AffineCoupling:channel", "ActNorm",
                                "AffineCoupling:channel"]


# ------------------------------------------------------------------------------------------------ data splits
def write_cifar_batches(folder: Path, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Official-format batches of ``n`` rows each whose first pixel is the row's index and label index % 10;
    returns the concatenated training rows (N, 3, 32, 32) and labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, labels, start = [], [], 0
    for name in BATCH_NAMES["train"] + BATCH_NAMES["test"]:
        data = np.random.default_rng(start).integers(0, 256, (n, 3072), dtype=np.uint8)
        data[:, 0] = np.arange(start, start + n)
        batch_labels = [int(i) % 10 for i in data[:, 0]]
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": batch_labels}, protocol=2))
        if name != "test_batch":
            rows.append(data.reshape(n, 3, 32, 32))
            labels += batch_labels
        start += n
    return np.concatenate(rows), np.array(labels)


def test_cifar_splits_in_file_order_and_shuffled(tmp_path):
    images, labels = write_cifar_batches(tmp_path)
    splits = load_image_splits("cifar10", tmp_path, val_size=5, subset={"test": 4})
    assert splits.shape == CIFAR and splits.train.dtype == torch.uint8
    np.testing.assert_array_equal(splits.train.numpy(), images[:-5])
    np.testing.assert_array_equal(splits.val_labels.numpy(), labels[-5:])
    assert splits.test.shape[0] == 4 and splits.test[0, 0, 0, 0] == 30
    shuffled = load_image_splits("cifar10", tmp_path, val_size=5, shuffle_seed=3)
    again = load_image_splits("cifar10", tmp_path, val_size=5, shuffle_seed=3)
    assert torch.equal(shuffled.val, again.val)
    all_images = torch.cat([shuffled.train, shuffled.val])
    all_labels = torch.cat([shuffled.train_labels, shuffled.val_labels])
    assert sorted(all_images[:, 0, 0, 0].tolist()) == list(range(30))
    assert all_images[:, 0, 0, 0].tolist() != list(range(30))
    assert torch.equal(all_labels, all_images[:, 0, 0, 0].long() % 10)  # labels stay with their images


def test_split_errors(tmp_path):
    write_cifar_batches(tmp_path)
    with pytest.raises(PAReconError, match="unknown dataset"):
        load_image_splits("svhn", tmp_path, val_size=5)
    with pytest.raises(PAReconError) as err:
        load_image_splits("cifar10", tmp_path, val_size=30)
    assert err.value.field == "val_size"
    with pytest.raises(PAReconError) as err:
        load_image_splits("cifar10", tmp_path, val_size=5, subset={"trian": 4})
    assert err.value.field == "subset"
    with pytest.raises(PAReconError) as err:
        load_image_splits("cifar10", tmp_path, val_size=5, subset={"train": 0})
    assert err.value.field == "subset.train"


@pytest.mark.parametrize("split, n", [("train", 26), ("val", 6), ("test", 7)])
def test_a_subset_larger_than_its_split_is_refused(tmp_path, split, n):
    write_cifar_batches(tmp_path)  # 30 training images (25 train + 5 val), 6 test images
    largest = load_image_splits("cifar10", tmp_path, val_size=5, subset={split: n - 1})
    assert largest.labelled(split)[0].shape[0] == n - 1
    with pytest.raises(PAReconError, match=rf"must be an integer in \[1, {n - 1}\], got {n}") as err:
        load_image_splits("cifar10", tmp_path, val_size=5, subset={split: n})
    assert err.value.field == f"subset.{split}"
