"""Experiment tracking behind a small interface: MLflow when on, a no-op when ``tracking: false``.

MLflow is imported only when tracking is on, so the trainer runs on machines without it.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from pa_recon import __version__
from pa_recon.errors import PAReconError

_SQLITE = "sqlite:///"


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings to ``{"a.b.c": "value"}`` with string values, as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, Mapping):
            flat[name] = "{}"  # an empty section stays visible, so runs can still be filtered on it
        else:
            flat[name] = str(value)
    return flat


class Tracker:
    """Tracking turned off: every call does nothing and ``run_id`` is ``None``."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record hyper-parameters (nested mappings are flattened)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record scalar metrics at an optimizer step."""

    def logged_steps(self) -> dict[str, int]:
        """The last step each metric of a continued run was logged at (empty for a new run)."""
        return {}

    def log_artifact(self, path: str | os.PathLike[str], folder: str | None = None) -> None:
        """Copy a local file into the run's artifacts, under ``folder`` if given."""

    def log_model(self, model: nn.Module) -> None:
        """Log the model with the MLflow PyTorch flavour."""

    def close(self, status: str) -> None:
        """End the run with an MLflow status: ``FINISHED``, ``FAILED`` or ``KILLED``."""


class MlflowTracker(Tracker):
    """An MLflow run addressed by id through an explicit client. Global MLflow state (tracking URI, active
    run) is changed only for the duration of :meth:`log_model`, which reads both from there.

    ``run_id`` given: continue that run (a resumed training); else, or when the store does not hold that run (the
    ``tracking_uri`` changed since), create a run in ``experiment``, named ``run_name`` or, when that is ``None``,
    by MLflow's generator with fresh randomness. New runs are tagged with the package version, the git commit
    and the DVC stage and experiment they ran in, where known.
    """

    def __init__(self, tracking_uri: str, experiment: str, run_name: str | None, run_id: str | None) -> None:
        self._mlflow = import_mlflow()
        from mlflow.exceptions import MlflowException

        self._uri = resolve_tracking_uri(tracking_uri)
        self._client = open_store(self._uri)
        self.continued = False
        try:
            if run_id is not None and self._holds(run_id):
                self._client.update_run(run_id, status="RUNNING")
                self.run_id, self.continued = run_id, True
            else:
                if run_id is not None:
                    print(f"pa-recon: warning: MLflow run {run_id} of this training is not in {self._uri!r} (was "
                          "tracking_uri changed?); the rest of the training is logged to a new run there",
                          file=sys.stderr)
                experiment_id = self._experiment_id(experiment)
                self.run_id = _with_fresh_random(lambda: self._client.create_run(
                    experiment_id, run_name=run_name, tags=_run_tags()).info.run_id)
        except MlflowException as exc:
            raise PAReconError(f"MLflow tracking at {self._uri!r} failed: {exc.message}",
                               field="tracking_uri") from None

    def _holds(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    def _experiment_id(self, name: str) -> str:
        found = self._client.get_experiment_by_name(name)
        if found is None:
            return self._client.create_experiment(name, artifact_location=_artifact_location(self._uri))
        if found.lifecycle_stage != "active":
            raise PAReconError(f"MLflow experiment {name!r} is deleted; restore it or choose another name",
                               field="experiment")
        return found.experiment_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        self._client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._client.log_batch(self.run_id, metrics=batch)

    def logged_steps(self) -> dict[str, int]:
        if not self.continued:
            return {}
        keys = self._client.get_run(self.run_id).data.metrics
        return {k: max(m.step for m in self._client.get_metric_history(self.run_id, k)) for k in keys}

    def log_artifact(self, path: str | os.PathLike[str], folder: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(Path(path)), artifact_path=folder)

    def log_model(self, model: nn.Module) -> None:
        mlflow = self._mlflow
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self._uri)
        # log_model files the model under the active run's experiment, so make ours the active run meanwhile.
        try:
            with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
                mlflow.pytorch.log_model(
                    model,
                    name="model",
                    serialization_format="pickle",
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
                )
        finally:
            mlflow.set_tracking_uri(previous)

    def close(self, status: str) -> None:
        self._client.set_terminated(self.run_id, status=status)


def resolve_tracking_uri(uri: str) -> str:
    """``uri`` with a relative SQLite path made absolute. In a DVC experiment that runs in a temporary copy of the
    repository (``dvc exp run --temp``, queued runs) the path is taken in the repository itself (``DVC_ROOT``), so
    that the runs outlive the copy."""
    if not uri.startswith(_SQLITE) or uri.startswith(_SQLITE + "/"):
        return uri
    here = Path.cwd().resolve()
    root = os.environ.get("DVC_ROOT")
    copy = next((p for p in (here, *here.parents) if (p / ".dvc").is_dir()), None)
    if root and copy is not None and copy != Path(root).resolve():
        here = Path(root).resolve() / here.relative_to(copy)
    return _SQLITE + str(here / uri[len(_SQLITE):])


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a new experiment in a local SQLite store go beside the database (MLflow's default is the
    current folder, which for a temporary copy of the repository is deleted); other stores choose themselves."""
    if not uri.startswith(_SQLITE + "/"):
        return None
    return (Path(uri[len(_SQLITE):]).parent / "mlruns").as_uri()


def _run_tags() -> dict[str, str]:
    """What a new run ran: the package version, the git commit of the current folder and the DVC stage and
    experiment, where known."""
    tags = {"pa_recon.version": __version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        tags["mlflow.source.git.commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout, or no git: the run is still logged
    for env, tag in (("DVC_STAGE", "dvc.stage"), ("DVC_EXP_NAME", "dvc.experiment")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def open_store(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri`` that has answered one query; a store MLflow cannot open (no server, a
    retired file store, a missing database driver) is a :class:`PAReconError` about ``tracking_uri``."""
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    try:
        client = mlflow.MlflowClient(uri)
        client.search_experiments(max_results=1)
    except MlflowException as exc:
        raise PAReconError(f"MLflow cannot use {uri!r}: {exc.message}", field="tracking_uri") from None
    except ImportError as exc:
        raise PAReconError(f"MLflow cannot use {uri!r}: {exc}", field="tracking_uri") from None
    return client


def check_tracking(tracking: bool, uri: str) -> None:
    """Fail now, with one line, when ``tracking`` is on and MLflow cannot use ``uri`` (before any data are made)."""
    if tracking:
        open_store(resolve_tracking_uri(uri))


def _check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail at once, not after MLflow's minutes of retries, when no server answers at ``uri``."""
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        pass  # a server answered (perhaps without /health, or asking for credentials): MLflow takes it from here
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise PAReconError(f"no MLflow server answers at {uri!r} ({reason}); start it, or set tracking: false",
                           field="tracking_uri") from None


def _with_fresh_random(create: Callable[[], str]) -> str:
    """``create()`` with the global ``random`` module seeded from the OS, its state restored afterwards.

    MLflow draws generated run names from ``random``, which a training seeds with its config's seed: without
    this every unnamed run would get the same name.
    """
    state = random.getstate()
    random.seed()
    try:
        return create()
    finally:
        random.setstate(state)


def import_mlflow() -> ModuleType:
    """Import MLflow (with its telemetry off unless the environment says otherwise) or explain what to do."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
        import mlflow.pytorch  # the flavour used by log_model is a submodule, not loaded by "import mlflow"
    except ImportError:
        raise PAReconError("tracking is on but MLflow cannot be imported; install it (pip install mlflow) "
                           "or set tracking: false", field="tracking") from None
    return mlflow


def start_tracker(tracking: bool, tracking_uri: str, experiment: str, run_name: str | None,
                  run_id: str | None) -> Tracker:
    """An :class:`MlflowTracker` when ``tracking`` is on, else the no-op :class:`Tracker`."""
    if not tracking:
        return Tracker()
    return MlflowTracker(tracking_uri, experiment, run_name, run_id)
