"""``pa-recon flow-train / flow-eval / flow-report`` on a tiny fake MNIST: outputs and MLflow tracking, resume after
an interruption, restart on changed settings, user errors."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from interruptions import interrupted_after
from mnist_fixture import idx_bytes

from pa_recon.cli import flows
from pa_recon.errors import PAReconError
from pa_recon.bench import image_flows
from pa_recon.train.checkpoint import load_checkpoint
from pa_recon.train.tracking import import_mlflow

SUBNET = {"kind": "gated", "hidden": 4, "blocks": 1}
MODEL = {"dequantization": {"kind": "variational", "steps": 1, "features": 2, "subnet": SUBNET},
         "layers": [{"checkerboard": 1, "subnet": SUBNET}, "squeeze", {"channel": 1, "subnet": SUBNET}, "split",
                    "squeeze", {"channel": 1, "subnet": SUBNET}]}
CONDITIONAL = {"condition": {"classes": 10, "features": 2, "subnet": SUBNET}, "dequantization": {"kind": "uniform"},
               "layers": [{"checkerboard": 1, "subnet": SUBNET}, "squeeze", {"glow": 1, "subnet": SUBNET},
                          {"split": "conditional", "subnet": SUBNET}]}
TRAIN = {"max_steps": 6, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 2, "val_every": 3, "log_every": 2,
         "sample_every": 0, "device": "cpu", "progress": False, "log_model": False}
EVAL = {"n_samples": 2, "batch_size": 4, "timing_repeats": 1, "temperatures": [0.7], "grid_size": 4,
        "interpolation_pairs": 2, "interpolation_steps": 3, "split_rows": 2, "split_resamples": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> Path:
    """A fake MNIST folder: 40 training and 10 test images of blurred blobs."""
    folder = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 10)):
        yy, xx = np.mgrid[:28, :28]
        centres = rng.uniform(8, 20, size=(n, 2, 1, 1))
        images = 255 * np.exp(-((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) / 18)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images.round()))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(rng.integers(0, 10, n)))
    return folder


def write_params(folder: Path, mnist: Path, **benchmark: Any) -> Path:
    params = {
        "benchmark": {"profile": "smoke", "dataset": "mnist", "data_root": str(mnist), "val_size": 8, "seed": 0,
                      "tracking": False, "tracking_uri": "sqlite:///unused.db", "experiment": "test", **benchmark},
        "models": {"tiny": MODEL, "labelled": CONDITIONAL},
        "profiles": {"smoke": {"smoke": True, "subset": {"train": 24, "test": 8}, "subnet": None, "train": TRAIN,
                               "eval": EVAL}},
        "reference": {"title": "Fake MNIST", "models": {"tiny": {"test_bpd": 1.0, "parameters": 123}},
                      "literature": {"Glow": 1.05}},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def run(*argv: str | Path) -> None:
    parser = argparse.ArgumentParser()
    flows.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    args.func(args)


def test_train_eval_report_tracked_in_one_mlflow_run(tmp_path, mnist, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = write_params(tmp_path, mnist, tracking=True, tracking_uri=uri)
    run("flow-train", "--params", params, "--model", "tiny", "--out", tmp_path / "runs" / "tiny")
    record = json.loads((tmp_path / "runs" / "tiny" / "run.json").read_text())
    assert record["settings"]["data"]["subset"] == {"train": 24, "test": 8} and record["train_seconds"] > 0
    run("flow-eval", "--params", params, "--model", "tiny", "--checkpoint", tmp_path / "runs" / "tiny",
        "--out", tmp_path / "results" / "tiny")
    metrics = json.loads((tmp_path / "results" / "tiny" / "metrics.json").read_text())
    assert metrics["n_val"] == 8 and metrics["n_test"] == 8 and metrics["train_steps"] == 6
    assert (metrics["dataset"], metrics["profile"]) == ("mnist", "smoke")
    assert 0 < metrics["test_bpd"] <= metrics["test_bpd_single_draw"] < math.inf
    assert metrics["figures"] == ["samples_T0.70.png", "interpolation.png", "split_resample_level1.png"]
    assert all((tmp_path / "results" / "tiny" / f).stat().st_size > 0 for f in metrics["figures"])

    client = import_mlflow().MlflowClient(uri)
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert mlflow_run.info.run_name == "tiny-smoke" and mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["model"] == "tiny" and mlflow_run.data.params["data.subset.train"] == "24"
    assert mlflow_run.data.metrics["eval/test_bpd"] == pytest.approx(metrics["test_bpd"])
    assert {a.path for a in client.list_artifacts(mlflow_run.info.run_id, "evaluation")} == {
        f"evaluation/{f}" for f in metrics["figures"]}

    run("flow-report", tmp_path / "results" / "tiny" / "metrics.json", "--params", params,
        "--out", tmp_path / "table.md", "--metrics", tmp_path / "metrics.json")
    table = (tmp_path / "table.md").read_text()
    assert "SMOKE RUN" in table and "| tiny (smoke) |" in table and "Glow 1.05" in table and "| 123 |" in table
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["smoke"]["tiny"]["test_bpd"] == metrics["test_bpd"]


def test_a_class_conditional_model_is_trained_evaluated_and_reported(tmp_path, mnist):
    params = write_params(tmp_path, mnist)
    run("flow-train", "--params", params, "--model", "labelled", "--out", tmp_path / "runs" / "labelled")
    out = tmp_path / "results" / "labelled"
    run("flow-eval", "--params", params, "--model", "labelled", "--checkpoint", tmp_path / "runs" / "labelled",
        "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["conditional"] == 10 and 0 < metrics["test_bpd"] < math.inf
    with pytest.raises(PAReconError, match="--model: this run was not trained as model 'tiny'"):
        run("flow-eval", "--params", params, "--model", "tiny", "--checkpoint", tmp_path / "runs" / "labelled",
            "--out", tmp_path / "results" / "mislabelled")
    assert "label_swap.png" in metrics["figures"] and all((out / f).is_file() for f in metrics["figures"])
    run("flow-report", out / "metrics.json", "--params", params, "--out", tmp_path / "table.md", "--metrics",
        tmp_path / "metrics.json")
    assert "| labelled (class-conditional) (smoke) |" in (tmp_path / "table.md").read_text()


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path, mnist, monkeypatch):
    params = write_params(tmp_path, mnist)
    run("flow-train", "--params", params, "--model", "tiny", "--out", tmp_path / "straight")

    loss_fn = image_flows.bits_per_dim_loss
    monkeypatch.setattr(image_flows, "bits_per_dim_loss", interrupted_after(5, loss_fn))
    with pytest.raises(KeyboardInterrupt):
        run("flow-train", "--params", params, "--model", "tiny", "--out", tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 4
    monkeypatch.setattr(image_flows, "bits_per_dim_loss", loss_fn)
    run("flow-train", "--params", params, "--model", "tiny", "--out", tmp_path / "resumed")

    straight, resumed = (load_checkpoint(tmp_path / name / "last.pt") for name in ("straight", "resumed"))
    assert resumed["step"] == 6 and resumed["finished"]
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name

    seconds = json.loads((tmp_path / "resumed" / "run.json").read_text())["train_seconds"]
    run("flow-train", "--params", params, "--model", "tiny", "--out", tmp_path / "resumed")  # finished: kept
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 6
    assert json.loads((tmp_path / "resumed" / "run.json").read_text())["train_seconds"] == seconds


def test_changed_settings_start_afresh(tmp_path, mnist, capsys):
    params = write_params(tmp_path, mnist)
    out = tmp_path / "runs" / "tiny"
    run("flow-train", "--params", params, "--model", "tiny", "--out", out)
    settings = yaml.safe_load(params.read_text())
    settings["profiles"]["smoke"]["train"]["lr"] = 5e-4
    params.write_text(yaml.safe_dump(settings))
    capsys.readouterr()
    run("flow-train", "--params", params, "--model", "tiny", "--out", out)
    assert "afresh" in capsys.readouterr().out
    checkpoint = load_checkpoint(out / "last.pt")  # a resumed run would have kept the finished first one
    assert checkpoint["config"]["lr"] == 5e-4 and checkpoint["step"] == 6


@pytest.mark.parametrize(("edit", "message"), [
    (lambda p: p["benchmark"].update(profile="huge"), "profile 'huge' is not defined"),
    (lambda p: p["benchmark"].pop("val_size"), "missing settings"),
    (lambda p: p["benchmark"].update(data_root="/nowhere"), "not found"),
    (lambda p: p["profiles"]["smoke"]["train"].update(epochs=2), "exactly one of max_steps and epochs"),
    (lambda p: p["profiles"]["smoke"].update(cpu_threads=0), "must be an integer >= 1, got 0"),
])
def test_user_errors_name_the_problem(tmp_path, mnist, edit, message):
    params = write_params(tmp_path, mnist)
    settings = yaml.safe_load(params.read_text())
    edit(settings)
    params.write_text(yaml.safe_dump(settings))
    with pytest.raises(PAReconError, match=message):
        run("flow-train", "--params", params, "--model", "tiny", "--out", tmp_path / "runs")
    with pytest.raises(PAReconError, match="unknown model"):
        run("flow-train", "--params", write_params(tmp_path, mnist), "--model", "big", "--out", tmp_path / "r")


def test_an_evaluation_device_this_machine_lacks_names_the_profile_setting(tmp_path, mnist, monkeypatch):
    params = yaml.safe_load(write_params(tmp_path, mnist).read_text())
    params["profiles"]["smoke"]["eval"]["device"] = "cuda"
    path = tmp_path / "cuda.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PAReconError) as err:
        run("flow-eval", "--params", path, "--model", "tiny", "--checkpoint", tmp_path / "runs", "--out", tmp_path / "r")
    assert (err.value.file, err.value.field) == (str(path), "profiles.smoke.eval.device")


def test_evaluating_an_unfinished_run_is_refused(tmp_path, mnist, monkeypatch):
    params = write_params(tmp_path, mnist)
    monkeypatch.setattr(image_flows, "bits_per_dim_loss", interrupted_after(3, image_flows.bits_per_dim_loss))
    with pytest.raises(KeyboardInterrupt):
        run("flow-train", "--params", params, "--model", "tiny", "--out", tmp_path / "runs")
    with pytest.raises(PAReconError, match="stopped at step 2 before the end"):
        run("flow-eval", "--params", params, "--model", "tiny", "--checkpoint", tmp_path / "runs",
            "--out", tmp_path / "results")


@pytest.mark.parametrize("section, key, value, message", [
    ("benchmark", None, {"data_rot": "x"}, "benchmark: unknown settings ['data_rot']"),
    ("profile", None, {"subsett": {"train": 8}}, "profiles.smoke: unknown settings ['subsett']"),
    ("profile", "train", {"max_stpes": 3}, "profiles.smoke.train.max_stpes: unknown training option(s)"),
    ("profile", "eval", {"n_sampels": 3}, "profiles.smoke.eval.n_sampels: unknown evaluation settings"),
    ("profile", "subnet", {"kind": "resnet", "hiden": 4}, "profiles.smoke.subnet: unknown settings ['hiden']"),
    ("benchmark", None, {"val_size": 0}, "benchmark.val_size: must lie in 1 … 39"),
    ("profile", None, {"subset": {"trian": 8}}, "profiles.smoke.subset: expected a positive image count"),
    ("model", None, {"layers": [{"checkerbord": 1}]}, "models.tiny.layers[0]: expected squeeze, split or"),
    ("model", "dequantization", {"kind": "uniformm"}, "models.tiny.dequantization: "),
])
def test_a_typo_in_the_benchmark_params_is_named_before_training(tmp_path, mnist, monkeypatch, section, key, value,
                                                                 message):
    monkeypatch.setattr(flows, "train_image_flow", lambda *a, **k: pytest.fail("trained"))
    params = yaml.safe_load(write_params(tmp_path, mnist).read_text())
    node = {"benchmark": params["benchmark"], "profile": params["profiles"]["smoke"],
            "model": params["models"]["tiny"]}[section]
    if key is None:
        node.update(value)
    else:
        node[key] = {**(node.get(key) or {}), **value}
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(PAReconError) as err:
        run("flow-train", "--params", path, "--model", "tiny", "--out", tmp_path / "runs")
    assert str(err.value).startswith(f"{path}: {message}")


def test_flow_report_refuses_files_that_are_not_flow_eval_results_and_duplicate_rows(tmp_path, mnist):
    params = write_params(tmp_path, mnist)
    junk = tmp_path / "junk" / "metrics.json"
    junk.parent.mkdir()
    junk.write_text('{"a": 1}')
    with pytest.raises(PAReconError, match=r"junk/metrics.json: not the metrics.json of flow-eval"):
        run("flow-report", junk, "--params", params, "--out", tmp_path / "t.md", "--metrics", tmp_path / "m.json")
    for folder in ("a", "b"):
        result = tmp_path / folder / "tiny" / "metrics.json"
        result.parent.mkdir(parents=True)
        result.write_text(json.dumps({"model": "tiny", "profile": "smoke", "test_bpd": 1.0}))
    with pytest.raises(PAReconError, match="a second result for model 'tiny'"):
        run("flow-report", tmp_path / "a" / "tiny" / "metrics.json", tmp_path / "b" / "tiny" / "metrics.json",
            "--params", params, "--out", tmp_path / "t.md", "--metrics", tmp_path / "m.json")
    assert not (tmp_path / "t.md").exists()


@pytest.mark.parametrize("split, n", [("train", 33), ("val", 9), ("test", 11)])
def test_a_subset_larger_than_its_split_is_refused_before_training(tmp_path, mnist, monkeypatch, split, n):
    """The fake MNIST has 40 training images (32 train + 8 val) and 10 test images."""
    monkeypatch.setattr(flows, "train_image_flow", lambda *a, **k: pytest.fail("trained"))
    params = yaml.safe_load(write_params(tmp_path, mnist).read_text())
    params["profiles"]["smoke"]["subset"] = {split: n}
    path = tmp_path / "subset.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(PAReconError, match=rf"must be an integer in \[1, {n - 1}\], got {n}") as err:
        run("flow-train", "--params", path, "--model", "tiny", "--out", tmp_path / "runs")
    assert (err.value.file, err.value.field) == (str(path), f"profiles.smoke.subset.{split}")
    assert not (tmp_path / "runs").exists()


def write_result(folder: Path, **result: Any) -> Path:
    """A flow-eval metrics.json of model ``folder.name`` (profile smoke, MNIST unless ``result`` says otherwise)."""
    path = folder / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"model": folder.name, "profile": "smoke", "dataset": "mnist", "test_bpd": 1.0,
                                **result}))
    return path


@pytest.mark.parametrize("result, field, message", [
    ({"dataset": "cifar10"}, "dataset", "dataset 'cifar10' does not match benchmark.dataset 'mnist' of "),
    ({"profile": "gpu"}, "profile", "profile 'gpu' does not match benchmark.profile 'smoke' of "),
])
def test_flow_report_refuses_results_of_another_dataset_or_profile(tmp_path, mnist, result, field, message):
    params = write_params(tmp_path, mnist)
    good, bad = write_result(tmp_path / "tiny"), write_result(tmp_path / "other", **result)
    with pytest.raises(PAReconError, match=message) as err:
        run("flow-report", good, bad, "--params", params, "--out", tmp_path / "t.md", "--metrics", tmp_path / "m.json")
    assert (err.value.file, err.value.field) == (str(bad), field)
    assert len(str(err.value).splitlines()) == 1
    assert not (tmp_path / "t.md").exists() and not (tmp_path / "m.json").exists()


def test_flow_report_takes_results_that_predate_the_dataset_key(tmp_path, mnist):
    params = write_params(tmp_path, mnist)
    old = tmp_path / "old" / "metrics.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"model": "old", "profile": "smoke", "test_bpd": 1.0}))
    run("flow-report", write_result(tmp_path / "tiny"), old, "--params", params, "--out", tmp_path / "t.md",
        "--metrics", tmp_path / "m.json")
    assert set(json.loads((tmp_path / "m.json").read_text())["smoke"]) == {"tiny", "old"}


def test_flow_eval_names_a_checkpoint_file_given_for_the_training_folder(tmp_path, mnist):
    params = write_params(tmp_path, mnist)
    last = tmp_path / "runs" / "tiny" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"a checkpoint")
    with pytest.raises(PAReconError, match="is a file; --checkpoint takes the training folder") as err:
        run("flow-eval", "--params", params, "--model", "tiny", "--checkpoint", last, "--out", tmp_path / "results")
    assert (err.value.file, err.value.field) == (str(last), "--checkpoint")
