"""The SR flow and its regression baseline: invertibility, arbitrary sizes, L1 training, evaluation tables."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from pa_recon.data.sr_images import downscale, to_uint8
from pa_recon.errors import PAReconError
from pa_recon.flows.registry import randomize_parameters
from pa_recon.train import Trainer, TrainConfig
from pa_recon.bench.sr_flow import (
    SREvalConfig,
    SRFlow,
    SRRegressor,
    EvalImage,
    bicubic_method,
    build_sr_model,
    copy_encoder,
    evaluate_methods,
    figure_crop,
    flow_method,
    l1_loss,
    pad_to_multiple,
    results_markdown,
    save_sr_figure,
    train_sr,
)

TINY = {"flow": {"levels": 2, "steps": 1, "subnet": {"hidden": 8, "blocks": 1}, "encoder": "rrdb",
                 "encoder_width": 8, "encoder_blocks": 1, "cond_features": 4, "split_prior": "conditional",
                 "injector": True},
        "head_hidden": 8}


def tiny(kind: str, levels: int = 2, encoder: str = "rrdb") -> SRFlow | SRRegressor:
    settings = {**TINY, "flow": {**TINY["flow"], "levels": levels, "encoder": encoder}}
    return build_sr_model(kind, settings, scale=4, patch_size=16)


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """A uint8 RGB test image (h, w, 3) of smooth random colour ramps."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    channels = [np.sin(a * x + b * y + c) for a, b, c in rng.uniform(1, 6, (3, 3))]
    return to_uint8(0.5 + 0.4 * np.stack(channels, axis=-1))


@pytest.mark.parametrize("residual", [False, True])
def test_the_conditional_sr_flow_inverts_exactly_and_decodes_deterministically_at_temperature_zero(residual):
    torch.manual_seed(0)
    model = build_sr_model("flow", {**TINY, "residual": residual}, scale=4, patch_size=16).double()
    randomize_parameters(model, scale=0.2)
    assert isinstance(model, SRFlow)
    hr = torch.randint(0, 256, (3, 3, 16, 16)).double()
    lr = torch.rand(3, 3, 4, 4, dtype=torch.float64)
    cond = model.condition(lr)
    y = (hr + 0.5) / 256 - model.base(lr)
    encoded = model.flow(y, cond)
    torch.testing.assert_close(model.flow.inverse(encoded.latents, cond).y, y, rtol=0, atol=1e-12)
    x = model.dequantizer.quantize(model.flow.decode(model.flow.encode(y, cond), cond) + model.base(lr))
    torch.testing.assert_close(x, hr, rtol=0, atol=0)
    torch.manual_seed(1)
    first = model.sample(lr[:1], 2, temperature=0.0)
    torch.manual_seed(2)
    second = model.sample(lr[:1], 1, temperature=0.0)
    torch.testing.assert_close(first, second.expand_as(first), rtol=0, atol=0)
    assert not torch.equal(*model.sample(lr[:1], 2, temperature=0.8))


def test_a_fresh_residual_flow_decodes_temperature_zero_to_the_bicubic_image():
    torch.manual_seed(0)
    model = build_sr_model("flow", {**TINY, "residual": True}, scale=4, patch_size=16)
    lr = torch.rand(1, 3, 4, 4)
    bicubic = model.dequantizer.quantize(model.base(lr)) / 255
    torch.testing.assert_close(model.sample(lr, 1, temperature=0.0), bicubic, rtol=0, atol=0)


@pytest.mark.parametrize("encoder", ["rrdb", "unet"])
def test_any_lr_size_is_padded_and_the_output_cropped_back(encoder):
    torch.manual_seed(0)
    lr = torch.rand(1, 3, 5, 7)
    padded = pad_to_multiple(lr, 2)
    assert padded.shape[-2:] == (6, 8)
    torch.testing.assert_close(padded[..., :5, :7], lr, rtol=0, atol=0)
    assert pad_to_multiple(padded, 2) is padded
    flow, regressor = tiny("flow", 3, encoder), tiny("regression", 3, encoder)
    assert flow.lr_multiple == regressor.lr_multiple == 2  # HR must be a multiple of 2^3 = 8
    assert flow.sample(lr, 2, 0.5).shape == (2, 3, 20, 28)
    assert regressor.predict(lr).shape == (1, 3, 20, 28)


def test_the_flow_encoder_starts_from_the_regression_encoder():
    flow, regressor = tiny("flow"), tiny("regression")
    randomize_parameters(regressor, scale=0.3)
    assert copy_encoder(regressor, flow) > 0
    torch.testing.assert_close(flow.flow.encoder.trunk.state_dict(), regressor.encoder.trunk.state_dict())


@pytest.mark.parametrize("kind", ["flow", "regression"])
def test_a_bad_model_section_leaves_an_earlier_run_in_its_folder_alone(tmp_path, kind):
    gen = torch.Generator().manual_seed(0)
    pairs = (torch.randint(0, 256, (4, 3, 16, 16), generator=gen, dtype=torch.uint8),
             torch.randint(0, 256, (4, 3, 4, 4), generator=gen, dtype=torch.uint8))
    config = TrainConfig(out_dir=str(tmp_path), max_steps=1, batch_size=4, device="cpu", progress=False,
                         tracking=False, sample_every=0)
    train_sr(kind, TINY, config, pairs, None, scale=4)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(PAReconError, match="levls"):
        train_sr(kind, {**TINY, "flow": {**TINY["flow"], "levls": 2}}, config, pairs, None, scale=4)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_the_l1_baseline_loss_decreases_with_the_shared_trainer(tmp_path):
    hr = torch.stack([torch.from_numpy(smooth_image(16, 16, s).transpose(2, 0, 1).copy()) for s in range(32)])
    lr = torch.from_numpy(np.stack([to_uint8(downscale(x.permute(1, 2, 0).numpy() / 255.0, 4)) for x in hr]))
    lr = lr.permute(0, 3, 1, 2).contiguous()
    torch.manual_seed(0)
    model = tiny("regression")
    before = l1_loss(model, (hr, lr))[0].item()
    config = TrainConfig(out_dir=str(tmp_path / "run"), max_steps=25, batch_size=8, lr=3e-3, device="cpu",
                         progress=False, tracking=False, checkpoint_every=0, val_every=0, sample_every=0)
    Trainer(model, config, l1_loss, (hr, lr)).fit()
    after = l1_loss(model, (hr, lr))[0].item()
    assert after < 0.8 * before


def test_evaluation_table_has_a_row_per_method_and_the_diversity_of_sampled_rows_only():
    torch.manual_seed(0)
    flow = tiny("flow")
    images = []
    for seed, (h, w) in enumerate([(24, 32), (20, 28)]):
        hr = smooth_image(h, w, seed)
        images.append(EvalImage(f"img{seed}", hr, to_uint8(downscale(hr / 255.0, 4)), grey=False))
    methods = {"bicubic": bicubic_method(4), "flow τ=0": flow_method(flow, 0.0, 3),
               "flow τ=0.8": flow_method(flow, 0.8, 3)}
    ev = evaluate_methods(images, methods, scale=4)
    assert list(ev.means) == list(methods)
    assert {name: sorted(rows) for name, rows in ev.per_image.items()} == {m: ["img0", "img1"] for m in methods}
    assert "diversity" in ev.means["flow τ=0.8"] and "diversity" not in ev.means["flow τ=0"]
    assert set(ev.means["bicubic"]) == {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lr_psnr"}
    table = results_markdown({"Tiny": ev}, 4, {}, "bicubic")
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(methods) and all(row.count("|") == 9 for row in rows)
    assert "| bicubic | " in table and "+0.00" in table


def test_the_figure_shows_the_crop_of_every_method_and_refuses_a_crop_off_the_image(tmp_path):
    hr = smooth_image(24, 32, 0)
    image = EvalImage("img", hr, to_uint8(downscale(hr / 255.0, 4)), grey=False)
    assert figure_crop(image, (4, 8, 16)) == (slice(4, 20), slice(8, 24))
    save_sr_figure(tmp_path / "f.png", image, {"bicubic": bicubic_method(4)}, 4, (4, 8, 16))
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for box in ((10, 0, 16), (0, -1, 8), (0, 0, 0)):
        with pytest.raises(PAReconError, match=re.escape(f"crop {box} does not fit the 24×32 image img")) as err:
            figure_crop(image, box)
        assert err.value.field == "figure"


@pytest.mark.parametrize("values, field", [
    ({"tau": [0.5]}, "tau"),
    ({"samples": 1}, "samples"),
    ({"temperatures": [0.5, -0.1]}, "temperatures[1]"),
    ({"figure": {"set": "Set5", "image": "bird", "top": 0, "size": 8}}, "figure"),
    ({"figure": {"set": "Set5", "image": ["bird"], "top": 0, "left": 0, "size": 8}}, "figure"),
])
def test_eval_settings_errors_name_the_key_within_the_eval_section(values, field):
    """The caller puts the section's own key (profiles.<name>.eval) in front, so the field must not repeat it."""
    assert SREvalConfig.from_dict({"temperatures": [0, 0.9]}).temperatures == (0.0, 0.9)
    with pytest.raises(PAReconError) as err:
        SREvalConfig.from_dict(values)
    assert err.value.field == field


def test_flow_settings_the_benchmark_owns_are_refused():
    with pytest.raises(PAReconError, match="flow.shape"):
        build_sr_model("flow", {**TINY, "flow": {**TINY["flow"], "shape": [3, 8, 8]}}, 4, 16)
