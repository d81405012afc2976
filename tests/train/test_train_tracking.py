"""MLflow tracking: what a run records, resuming into the same run (or a new one where the store changed), where a
relative store lives, stores MLflow cannot use, and running without MLflow."""

from __future__ import annotations

import random
import socket
import sys
import time

import pytest
from interruptions import interrupted_after
from train_problem import AffineFlow, images, nll_loss

from pa_recon import __version__
from pa_recon.errors import PAReconError
from pa_recon.train import Trainer, load_checkpoint
from pa_recon.train.tracking import (
    check_tracking,
    flatten_params,
    import_mlflow,
    resolve_tracking_uri,
    start_tracker,
)


def test_run_is_recorded_and_resumed_into_the_same_run(data, make_config, tmp_path, monkeypatch):
    client_class = import_mlflow().MlflowClient
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train, val = data
    config = make_config(tracking=True, tracking_uri=uri, experiment="unit", run_name="affine", max_steps=24,
                         sample_every=10, log_model=False)
    # 15 steps done: the last checkpoint is at step 10, but train/loss was logged at 14 and val/loss at 15.
    trainer = Trainer(AffineFlow(), config, interrupted_after(16, nll_loss), train, val, sample_fn=images,
                      extra_params={"model": {"kind": "affine", "dims": 1}})
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    client = client_class(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("unit").experiment_id])
    assert run.info.status == "KILLED" and run.info.run_name == "affine"

    config.log_model = True
    resumed = Trainer(AffineFlow(), config, nll_loss, train, val, sample_fn=images)
    metrics = resumed.fit()
    (run,) = client.search_runs([run.info.experiment_id])
    assert resumed.run_id == run.info.run_id and run.info.status == "FINISHED"

    params = run.data.params
    assert params["lr"] == "0.05" and params["max_steps"] == "24" and params["model.kind"] == "affine"
    assert run.data.metrics["val/loss"] == pytest.approx(metrics["val/loss"])
    # The resumed training repeats steps 11–15 without logging their metrics a second time.
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [7, 14, 21, 24]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [15, 24]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch/loss")] == [8, 16, 24]
    artifacts = {a.path for folder in ("checkpoints", "samples")
                 for a in client.list_artifacts(run.info.run_id, folder)}
    assert artifacts == {"checkpoints/last.pt", "samples/step_0000010.png", "samples/step_0000020.png",
                         "samples/step_0000024.png"}
    (model,) = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert model.source_run_id == run.info.run_id and model.name == "model"
    assert run.data.tags["pa_recon.version"] == __version__


def test_a_resumed_training_whose_run_is_not_in_the_store_logs_to_a_new_run(data, make_config, tmp_path, capsys):
    train, val = data
    first, second = (f"sqlite:///{tmp_path / name}" for name in ("first.db", "second.db"))
    config = make_config(tracking=True, tracking_uri=first, experiment="unit", max_steps=24, log_model=False)
    with pytest.raises(KeyboardInterrupt):
        Trainer(AffineFlow(), config, interrupted_after(16, nll_loss), train, val).fit()
    old_id = load_checkpoint(f"{config.out_dir}/last.pt")["run_id"]
    config.tracking_uri = second
    resumed = Trainer(AffineFlow(), config, nll_loss, train, val)
    resumed.fit()
    assert f"MLflow run {old_id} of this training is not in '{second}'" in capsys.readouterr().err
    client = import_mlflow().MlflowClient(second)
    (run,) = client.search_runs([client.get_experiment_by_name("unit").experiment_id])
    assert run.info.run_id == resumed.run_id != old_id and run.info.status == "FINISHED"
    assert run.data.params["max_steps"] == "24"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [14, 21, 24]


@pytest.mark.parametrize("uri, message", [
    ("mlruns", "The filesystem tracking backend"),
    ("postgresql://user@127.0.0.1:1/runs", "No module named"),
])
def test_a_store_mlflow_cannot_use_is_one_error_about_tracking_uri(tmp_path, monkeypatch, uri, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PAReconError, match=f"^tracking_uri: MLflow cannot use '{uri}': {message}") as err:
        start_tracker(True, uri, "unit", None, None)
    assert "\n" not in str(err.value)
    check_tracking(False, uri)  # tracking off: the store is never opened


def test_a_relative_store_in_a_temporary_copy_of_the_repository_lands_in_the_repository(tmp_path, monkeypatch):
    repo, copy = tmp_path / "repo", tmp_path / "tmp" / "exps" / "copy"
    for root in (repo, copy):
        (root / ".dvc").mkdir(parents=True)
        (root / "pipelines" / "mnist").mkdir(parents=True)
    monkeypatch.chdir(copy / "pipelines" / "mnist")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert resolve_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{copy.resolve()}/pipelines/mnist/mlflow.db"
    monkeypatch.setenv("DVC_ROOT", str(repo))  # what DVC sets for experiments run in a temporary copy
    assert resolve_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{repo.resolve()}/pipelines/mnist/mlflow.db"
    assert resolve_tracking_uri(f"sqlite:///{tmp_path}/abs.db") == f"sqlite:///{tmp_path}/abs.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    # The run and its artifacts go to the repository, not to the copy that DVC deletes afterwards.
    tracker = start_tracker(True, "sqlite:///mlflow.db", "unit", "r", None)
    (copy / "pipelines" / "mnist" / "note.txt").write_text("x")
    tracker.log_artifact(copy / "pipelines" / "mnist" / "note.txt")
    tracker.close("FINISHED")
    assert (repo / "pipelines" / "mnist" / "mlflow.db").is_file()
    assert not (copy / "pipelines" / "mnist" / "mlflow.db").exists()
    assert list((repo / "pipelines" / "mnist" / "mlruns").rglob("note.txt"))


def test_new_runs_are_tagged_with_the_dvc_stage_and_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_STAGE", "train_prior@marginal")
    monkeypatch.setenv("DVC_EXP_NAME", "lam-sweep")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = start_tracker(True, uri, "unit", "r", None)
    tags = import_mlflow().MlflowClient(uri).get_run(tracker.run_id).data.tags
    assert tags["dvc.stage"] == "train_prior@marginal" and tags["dvc.experiment"] == "lam-sweep"
    assert tags["pa_recon.version"] == __version__ and "mlflow.source.git.commit" not in tags  # not a git folder


def test_unnamed_runs_get_their_own_names_without_touching_the_seeded_random_state(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    random.seed(0)
    expected = random.random()
    names, draws = [], []
    for _ in range(3):
        random.seed(0)
        tracker = start_tracker(True, uri, "unit", None, None)
        draws.append(random.random())
        names.append(import_mlflow().MlflowClient(uri).get_run(tracker.run_id).info.run_name)
        tracker.close("FINISHED")
    assert len(set(names)) == 3 and all(names)
    assert draws == [expected] * 3


def test_tracking_off_never_imports_mlflow(data, make_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    train, val = data
    metrics = Trainer(AffineFlow(), make_config(max_steps=5, tracking=False), nll_loss, train, val).fit()
    assert metrics["step"] == 5
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_tracking_on_without_mlflow_is_an_error(data, make_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    train, _ = data
    trainer = Trainer(AffineFlow(), make_config(tracking=True), nll_loss, train)
    with pytest.raises(PAReconError, match="tracking: false") as info:
        trainer.fit()
    assert info.value.field == "tracking"


def test_flatten_params():
    assert flatten_params({"a": 1, "b": {"c": None, "d": {"e": [1, 2]}}, "v": {}}) == {
        "a": "1", "b.c": "None", "b.d.e": "[1, 2]", "v": "{}"}


def test_an_unreachable_tracking_server_fails_at_once():
    with socket.socket() as s:  # a port nothing listens on once the socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(PAReconError, match=f"tracking_uri: no MLflow server answers at 'http://127.0.0.1:{port}'"):
        start_tracker(True, f"http://127.0.0.1:{port}", "unit", None, None)
    assert time.perf_counter() - start < 10
