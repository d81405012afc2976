"""The training loop: convergence, exact resume, schedule, scheduled outputs and errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib.image
import pytest
import torch
from interruptions import interrupted_after
from train_problem import TRUE_SCALE, TRUE_SHIFT, AffineFlow, images, nll_loss

from pa_recon.errors import PAReconError
from pa_recon.train import TrainConfig, Trainer, load_checkpoint, lr_multiplier, save_image_grid


def test_loss_decreases_and_fits_the_data(data, make_config):
    train, val = data
    trainer = Trainer(AffineFlow(), make_config(max_steps=150, schedule="constant"), nll_loss, train, val)
    before = trainer.validate()["val/loss"]
    metrics = trainer.fit()
    assert metrics["val/loss"] < before - 0.5
    assert metrics["step"] == 150
    assert math.exp(trainer.model.a.item()) == pytest.approx(TRUE_SCALE, abs=0.4)
    assert trainer.model.b.item() == pytest.approx(TRUE_SHIFT, abs=0.4)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_interrupted_and_resumed_run_is_bit_identical(data, make_config, tmp_path, ema_decay):
    train, val = data
    # 8 steps per epoch: the crash after step 25 resumes from step 20, in the middle of epoch 2. With
    # log_every=0 the final train/* metrics average all 40 steps, across the crash.
    settings = dict(epochs=5, max_steps=None, ema_decay=ema_decay, grad_clip=0.5, sample_every=12, log_every=0)
    full = Trainer(AffineFlow(), make_config(out_dir=str(tmp_path / "full"), **settings), nll_loss, train, val,
                   sample_fn=images)
    full_metrics = full.fit()
    full_rng = torch.get_rng_state()

    config = make_config(out_dir=str(tmp_path / "parts"), **settings)
    crashing = interrupted_after(26, nll_loss, RuntimeError("simulated crash"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(AffineFlow(), config, crashing, train, val, sample_fn=images).fit()
    assert load_checkpoint(tmp_path / "parts" / "last.pt")["step"] == 20
    torch.manual_seed(12345)  # a new process would start from other generator states
    resumed = Trainer(AffineFlow(a=-1.0, b=4.0), config, nll_loss, train, val, sample_fn=images)
    resumed_metrics = resumed.fit()

    assert resumed.step == full.step == 40
    for name, p in full.model.state_dict().items():
        assert torch.equal(p, resumed.model.state_dict()[name]), name
    full_opt, resumed_opt = full.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert full_opt["param_groups"] == resumed_opt["param_groups"]
    for i, state in full_opt["state"].items():
        for key, value in state.items():
            assert torch.equal(value, resumed_opt["state"][i][key]), (i, key)
    if ema_decay:
        for name, value in full.ema.shadow.items():
            assert torch.equal(value, resumed.ema.shadow[name]), name
    assert resumed_metrics == full_metrics
    assert torch.equal(torch.get_rng_state(), full_rng)
    assert sorted(p.name for p in (tmp_path / "parts" / "samples").iterdir()) == [
        "step_0000012.png", "step_0000024.png", "step_0000036.png", "step_0000040.png"]


def test_resume_in_a_separate_process(data, make_config, tmp_path):
    train, val = data
    settings = dict(max_steps=30, ema_decay=0.9, sample_every=0)
    full = Trainer(AffineFlow(), make_config(out_dir=str(tmp_path / "full"), **settings), nll_loss, train, val)
    full.fit()

    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        from interruptions import interrupted_after
        from train_problem import AffineFlow, nll_loss
        from pa_recon.train import TrainConfig, Trainer
        x = 2.0 + 3.0 * torch.randn(320, 1, generator=torch.Generator().manual_seed(1))
        config = TrainConfig(**{make_config(out_dir=str(tmp_path / "parts"), **settings).to_dict()!r})
        loss = interrupted_after(int(sys.argv[1]) + 1, nll_loss, SystemExit(3))
        Trainer(AffineFlow(), config, loss, x[:256], x[256:]).fit()
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    assert subprocess.run([sys.executable, str(script), "17"], env=env).returncode == 3
    assert subprocess.run([sys.executable, str(script), "1000"], env=env).returncode == 0
    resumed = load_checkpoint(tmp_path / "parts" / "last.pt")
    assert resumed["step"] == 30
    for name, p in full.model.state_dict().items():
        assert torch.equal(p, resumed["model"][name]), name
    assert resumed["metrics"] == full.metrics


def test_finished_run_is_not_trained_again(data, make_config):
    train, val = data
    config = make_config(max_steps=10)
    first = Trainer(AffineFlow(), config, nll_loss, train, val)
    metrics = first.fit()
    again = Trainer(AffineFlow(), config, interrupted_after(1, nll_loss, RuntimeError("trained again")), train, val)
    assert again.fit() == metrics
    assert torch.equal(again.model.a, first.model.a)


def test_a_longer_run_continues_a_finished_one(data, make_config):
    train, val = data
    Trainer(AffineFlow(), make_config(max_steps=10), nll_loss, train, val).fit()
    longer = Trainer(AffineFlow(), make_config(max_steps=16), nll_loss, train, val)
    assert longer.fit()["step"] == 16
    assert load_checkpoint(longer.last_path)["step"] == 16


def test_outputs_written(data, make_config, tmp_path):
    train, val = data
    trainer = Trainer(AffineFlow(), make_config(max_steps=20, sample_every=8), nll_loss, train, val,
                      sample_fn=images)
    trainer.fit()
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "last.pt", "samples"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_0000008.png", "step_0000016.png", "step_0000020.png"]
    best = load_checkpoint(run / "best.pt")
    assert best["best_metric"] == trainer.best_metric and best["step"] in (15, 20)
    last = load_checkpoint(run / "last.pt")
    assert last["finished"] and last["config"]["max_steps"] == 20


def test_validation_and_sampling_do_not_disturb_training(data, make_config):
    train, val = data
    trainer = Trainer(AffineFlow(), make_config(ema_decay=0.5), nll_loss, train, val, sample_fn=images)
    trainer.fit()
    state = torch.get_rng_state()
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    first, again = trainer.validate(), trainer.validate()
    assert first == again
    assert torch.equal(trainer.sample(), trainer.sample())
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in weights.items())
    assert trainer.model.training


def test_conditional_batches_are_tuples(make_config):
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(128, 1, generator=g)
    x = 2 * cond + 0.1 * torch.randn(128, 1, generator=g)
    model = torch.nn.Linear(1, 1)

    def regression(model, batch):
        x, c = batch
        return ((model(c) - x) ** 2).mean(), {}

    metrics = Trainer(model, make_config(max_steps=200, val_every=0, lr=0.1), regression, (x, cond), (x, cond)).fit()
    assert metrics["val/loss"] < 0.05
    assert model.weight.item() == pytest.approx(2.0, abs=0.1)


def test_non_finite_loss_is_reported(data, make_config):
    train, _ = data

    def nan_loss(model, batch):
        return model(batch).mean() * float("nan"), {}

    with pytest.raises(PAReconError, match="training loss is nan at step 1"):
        Trainer(AffineFlow(), make_config(), nan_loss, train).fit()


def test_too_little_data_for_one_batch(make_config):
    with pytest.raises(PAReconError, match="fewer than one batch"):
        Trainer(AffineFlow(), make_config(batch_size=64), nll_loss, torch.zeros(10, 1))


def test_checkpoint_of_another_model_is_rejected(data, make_config):
    train, _ = data
    Trainer(AffineFlow(), make_config(max_steps=10), nll_loss, train).fit()
    with pytest.raises(PAReconError, match=r"last\.pt: checkpoint does not match"):
        Trainer(torch.nn.Linear(1, 1), make_config(max_steps=20), nll_loss, train).fit()


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("cosine", 0, 0.1),  # warm-up: (0 + 1) / 10
        ("cosine", 9, 1.0),
        ("cosine", 10, 1.0),
        ("cosine", 60, 0.55),  # half-way through the decay: (1 + 0.1) / 2
        ("cosine", 110, 0.1),
        ("step", 29, 1.0),
        ("step", 30, 0.5),
        ("step", 50, 0.25),
        ("exponential", 20, 0.5 ** 0.5),
        ("constant", 100, 1.0),
    ],
)
def test_lr_schedule(schedule, step, expected):
    config = TrainConfig(max_steps=110, warmup_steps=10, schedule=schedule, min_lr_ratio=0.1, decay_every=20,
                         decay_gamma=0.5)
    assert lr_multiplier(step, config, total_steps=110) == pytest.approx(expected)


def test_logged_learning_rate_follows_the_schedule(data, make_config):
    train, _ = data
    trainer = Trainer(AffineFlow(), make_config(max_steps=8, log_every=1, warmup_steps=4), nll_loss, train)
    trainer.fit()
    assert trainer.metrics["train/lr"] == pytest.approx(0.05 * lr_multiplier(7, trainer.config, 8))


def test_image_grid_layout(tmp_path):
    path = tmp_path / "grid.png"
    save_image_grid(torch.rand(5, 3, 4, 6), path)
    pixels = matplotlib.image.imread(path)
    assert pixels.shape == (2 * 6 + 2, 3 * 8 + 2, 4)  # 3 per row, 2 rows, 2-px gaps, RGBA
    with pytest.raises(ValueError, match="expected images"):
        save_image_grid(torch.rand(5, 2, 4, 6), path)
