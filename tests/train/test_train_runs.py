"""The run record of a training folder: resume with the same settings, start afresh otherwise; kept up to date."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_problem import AffineFlow, nll_loss

from pa_recon.errors import PAReconError
from pa_recon.train import Trainer, save_checkpoint
from pa_recon.train.runs import RUN_FILE, fit_recorded, open_run, read_run, write_json

SETTINGS = {"model": {"width": 4}, "data": "procedural"}


def _trained_folder(make_config, finished: bool):
    """A folder as a run with SETTINGS leaves it: record, last.pt (finished or not), best.pt and a sample."""
    config = make_config()
    record = open_run(config, SETTINGS)
    record.update(train_seconds=12.5, hardware=["cpu"])
    write_json(f"{config.out_dir}/{RUN_FILE}", record)
    save_checkpoint(f"{config.out_dir}/last.pt", {"step": 3, "finished": finished})
    save_checkpoint(f"{config.out_dir}/best.pt", {"step": 2})
    Path(config.out_dir, "samples").mkdir()
    return config


@pytest.mark.parametrize("finished, says", [(False, "resuming from step 3"),
                                            (True, "finished at step 3; delete the folder to train again")])
def test_same_settings_resume_the_record_and_say_so(make_config, capsys, finished, says):
    config = _trained_folder(make_config, finished)
    capsys.readouterr()
    record = open_run(config, SETTINGS)
    assert capsys.readouterr().out == f"{config.out_dir}: {says}\n"
    assert record["train_seconds"] == 12.5 and record["hardware"] == ["cpu"]
    assert {p.name for p in Path(config.out_dir).iterdir()} == {
        RUN_FILE, "last.pt", "best.pt", "samples"}


def test_an_unfinished_run_resumes_even_when_finished_ones_restart(make_config):
    config = _trained_folder(make_config, finished=False)
    assert open_run(config, SETTINGS, resume_finished=False)["train_seconds"] == 12.5


@pytest.mark.parametrize(("change", "reason"), [
    (dict(settings={**SETTINGS, "data": "drive"}), "trained with other settings"),
    (dict(lr=1e-4), "trained with other settings"),
    (dict(resume_finished=False), "finished"),
])
def test_other_settings_or_a_finished_run_clear_the_folder(make_config, capsys, change, reason):
    config = _trained_folder(make_config, finished=True)
    settings = change.pop("settings", SETTINGS)
    resume_finished = change.pop("resume_finished", True)
    capsys.readouterr()
    record = open_run(make_config(**change), settings, resume_finished=resume_finished)
    assert record == {"settings": json.loads(json.dumps({**settings, "train": record["settings"]["train"]})),
                      "train_seconds": 0.0, "hardware": []}
    assert list(Path(config.out_dir).iterdir()) == []
    assert f"{reason}; starting afresh" in capsys.readouterr().out


def test_bookkeeping_options_do_not_restart(make_config):
    config = _trained_folder(make_config, finished=False)
    changed = make_config(val_every=3, checkpoint_every=1, progress=True, tracking=True, device="cuda")
    assert open_run(changed, SETTINGS)["train_seconds"] == 12.5 and config.out_dir == changed.out_dir


def test_an_unreadable_record_is_a_clear_error(make_config):
    config = make_config()
    Path(config.out_dir).mkdir(parents=True)
    Path(config.out_dir, RUN_FILE).write_text("{not json")
    with pytest.raises(PAReconError, match="unreadable run record"):
        open_run(config, SETTINGS)
    with pytest.raises(PAReconError, match="no run record"):
        read_run(config.out_dir + "/elsewhere")


def test_the_record_is_written_before_the_first_step_and_a_finished_run_is_left_alone(make_config, data):
    config = make_config(max_steps=4, val_every=0, checkpoint_every=2)
    record_file = Path(config.out_dir) / RUN_FILE
    seen = []

    def watched(model, batch):
        seen.append(record_file.is_file())
        return nll_loss(model, batch)

    record = open_run(config, SETTINGS)
    fit_recorded(config, record, watched, lambda loss: Trainer(AffineFlow(), config, loss, data[0]))
    assert seen == [True] * 4 and read_run(config.out_dir)["settings"] == record["settings"]
    before = record_file.read_text()
    fit_recorded(config, open_run(config, SETTINGS), watched,
                 lambda loss: Trainer(AffineFlow(), config, loss, data[0]))
    assert len(seen) == 4 and record_file.read_text() == before
