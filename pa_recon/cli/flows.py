"""Image-flow benchmark sub-commands: flow-train, flow-eval, flow-report.

They read a benchmark params file (e.g. pipelines/mnist/params.yaml) with the sections ``benchmark`` (``profile``,
``dataset``, ``data_root``, ``val_size``, ``seed``, ``tracking``, ``tracking_uri``, ``experiment``, optional
``shuffle_seed``), ``models``
(one layout per model, see :mod:`pa_recon.bench.image_flows`), ``profiles`` (per profile: ``subset``, ``subnet``,
``train``, ``eval``, optional ``cpu_threads`` and ``smoke`` flag) and ``reference`` (published figures for the
report).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path
from typing import Any


from pa_recon.cli.common import (benchmark_profile, check_keys, data_path_from, declare_outputs, load_params,
                                 params_key, pick_device, training_folder)
from pa_recon.errors import PAReconError
from pa_recon.flows import SubnetConfig
from pa_recon.report import write_metrics_json, write_text
from pa_recon.train import TrainConfig
from pa_recon.bench.image_flows import (
    EvalConfig,
    ImageSplits,
    build_image_flow,
    evaluate_image_flow,
    load_image_splits,
    load_trained_flow,
    results_markdown,
    train_image_flow,
)
from pa_recon.train.tracking import start_tracker

_BENCHMARK_KEYS = ("dataset", "data_root", "val_size", "seed", "tracking", "tracking_uri", "experiment")
_REPORTED = ("val_bpd", "test_bpd", "val_bpd_single_draw", "test_bpd_single_draw", "inference_ms", "sampling_ms",
             "parameters", "train_seconds", "train_steps")


def _benchmark(args: argparse.Namespace) -> tuple[dict[str, Any], str, dict[str, Any], EvalConfig]:
    """The checked ``benchmark`` section, active profile (name and section) and evaluation settings."""
    return benchmark_profile(args.params, _BENCHMARK_KEYS, evaluation=EvalConfig.from_dict, optional=("shuffle_seed",),
                             profile_optional=("subset", "subnet", "train", "eval"))


def _subnet(profile: dict[str, Any], path: str, name: str) -> SubnetConfig | None:
    values = profile.get("subnet")
    if values is None:
        return None
    return SubnetConfig(**check_keys(values, [f.name for f in fields(SubnetConfig)], file=path,
                                     field=f"profiles.{name}.subnet"))


def _splits(params: str, data_root: str, data: dict[str, Any]) -> ImageSplits:
    """The image splits of a run's data selection (``dataset``, ``val_size``, ``subset``, ``shuffle_seed``) under
    ``data_root``, the ``benchmark.data_root`` of the params file ``params``."""
    with data_path_from(params, "benchmark.data_root"):
        return load_image_splits(data["dataset"], data_root, data["val_size"], data["subset"],
                                 data.get("shuffle_seed"))


def _model_layouts(args: argparse.Namespace) -> dict[str, Any]:
    """The params file's ``models`` section, which must define ``--model``."""
    models = load_params(args.params, "models")
    if args.model not in models:
        raise PAReconError(f"unknown model {args.model!r}; defined: {sorted(models)}", file=args.params,
                           field="models")
    return models


def cmd_flow_train(args: argparse.Namespace) -> None:
    """Train one model of the params file's ``models`` under the active profile, resuming a stopped run."""
    bench, profile_name, profile, _ = _benchmark(args)
    models = _model_layouts(args)
    with params_key(args.params, f"profiles.{profile_name}.train"):
        config = TrainConfig.from_dict({
            **profile.get("train", {}), "out_dir": args.out, "seed": bench["seed"], "tracking": bench["tracking"],
            "tracking_uri": bench["tracking_uri"], "experiment": bench["experiment"],
            "run_name": f"{args.model}-{profile_name}",
        })
    data = {"dataset": bench["dataset"], "val_size": bench["val_size"], "subset": profile.get("subset"),
            "shuffle_seed": bench.get("shuffle_seed")}
    try:
        splits = _splits(args.params, bench["data_root"], data)
    except PAReconError as err:
        if err.file is not None:
            raise
        # where each setting lives: subset (and subset.<split>) in the profile, the others in benchmark
        section = f"profiles.{profile_name}" if (err.field or "").split(".")[0] == "subset" else "benchmark"
        raise err.under(section, args.params) from None
    subnet = _subnet(profile, args.params, profile_name)
    # The training builds the model again; built here, a bad layout is named by its key before training.
    with params_key(args.params, f"models.{args.model}"):
        build_image_flow(models[args.model], splits.shape, subnet)
    metrics = train_image_flow(models[args.model], config, splits, subnet,
                               settings={"data": data, "profile": profile_name},
                               extra_params={"model": args.model, "profile": profile_name, "data": data})
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}))


def cmd_flow_eval(args: argparse.Namespace) -> None:
    """Bits/dim, timings and figures of a trained model; ``metrics.json`` and PNGs in ``--out``."""
    bench, profile_name, _, config = _benchmark(args)
    device = pick_device(config.device, f"profiles.{profile_name}.eval.device", args.params)
    model, record, checkpoint = load_trained_flow(training_folder(args.checkpoint, "--checkpoint", "flow-train"),
                                                  device)
    if json.loads(json.dumps(_model_layouts(args)[args.model])) != record["settings"]["layout"]:
        raise PAReconError(f"this run was not trained as model {args.model!r} of {args.params} (its layout differs)",
                           file=args.checkpoint, field="--model")
    data = record["settings"]["data"]
    splits = _splits(args.params, bench["data_root"], data)
    out = Path(args.out)
    result = evaluate_image_flow(model, splits, config, out)
    result.update(model=args.model, profile=record["settings"]["profile"], dataset=data["dataset"],
                  train_seconds=record["train_seconds"], train_hardware=record["hardware"],
                  train_steps=int(checkpoint["step"]))
    write_metrics_json(out / "metrics.json", result)
    if bench["tracking"] and checkpoint.get("run_id"):
        tracker = start_tracker(True, bench["tracking_uri"], bench["experiment"], None, checkpoint["run_id"])
        try:
            tracker.log_metrics({f"eval/{k}": float(result[k]) for k in _REPORTED if k in result},
                                result["train_steps"])
            for name in result["figures"]:
                tracker.log_artifact(out / name, "evaluation")
        finally:
            tracker.close("FINISHED")
    print(json.dumps({k: result[k] for k in _REPORTED if k in result}))


def cmd_flow_report(args: argparse.Namespace) -> None:
    """One Markdown table and one metrics JSON from the ``metrics.json`` of several models (named by folder), which
    must all be results of the params file's ``benchmark.dataset`` (where they record it; results of flow-eval
    before it did are taken as they are) and ``benchmark.profile``."""
    bench, profile, profile_section, _ = _benchmark(args)
    reference = load_params(args.params, "reference")
    results: dict[str, dict[str, Any]] = {}
    for path in map(Path, args.results):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise PAReconError(f"cannot read metrics ({err})", file=path) from None
        missing = [k for k in ("model", "profile", "test_bpd") if not isinstance(result, dict) or k not in result]
        if missing:
            raise PAReconError(f"not the metrics.json of flow-eval (no {missing})", file=path)
        for key, wanted in (("dataset", bench["dataset"]), ("profile", profile)):
            if result.get(key, wanted) != wanted:
                raise PAReconError(f"{key} {result[key]!r} does not match benchmark.{key} {wanted!r} of {args.params}",
                                   file=path, field=key)
        if path.parent.name in results:
            raise PAReconError(f"a second result for model {path.parent.name!r} (each row is named by the folder)",
                               file=path)
        results[path.parent.name] = result
    for path in (args.out, args.metrics):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, results_markdown(results, reference, profile, bool(profile_section.get("smoke", False))))
    write_metrics_json(args.metrics, {profile: {name: {k: r[k] for k in _REPORTED if k in r}
                                                for name, r in results.items()}})


def register(sub: argparse._SubParsersAction) -> None:
    """Add the image-flow benchmark sub-commands: flow-train, flow-eval, flow-report."""
    p = sub.add_parser("flow-train", help="train one flow of a benchmark params file (resumes a stopped run)")
    p.add_argument("--params", default="params.yaml", help="benchmark params file (benchmark, models, profiles)")
    p.add_argument("--model", required=True, help="a name in the params file's models section")
    p.add_argument("--out", required=True, help="training folder (checkpoints, samples, run.json)")
    p.set_defaults(func=cmd_flow_train)
    declare_outputs(p, folders=["out"], resumable=True)

    p = sub.add_parser("flow-eval", help="bits/dim (importance-sampled), timings and figures of a trained flow")
    p.add_argument("--params", default="params.yaml", help="benchmark params file (benchmark, models, profiles)")
    p.add_argument("--model", required=True, help="the model's name (a label in the results)")
    p.add_argument("--checkpoint", required=True, help="the training folder written by flow-train")
    p.add_argument("--out", required=True, help="folder for metrics.json and the PNG figures")
    p.set_defaults(func=cmd_flow_eval)
    declare_outputs(p, folders=["out"])

    p = sub.add_parser("flow-report", help="Markdown table and metrics JSON of several evaluated flows")
    p.add_argument("results", nargs="+", help="metrics.json files of flow-eval; each named by its folder")
    p.add_argument("--params", default="params.yaml", help="the benchmark params file (benchmark, profiles, reference)")
    p.add_argument("--out", required=True, help="Markdown table to write")
    p.add_argument("--metrics", required=True, help="metrics JSON to write (for dvc metrics show)")
    p.set_defaults(func=cmd_flow_report)
    declare_outputs(p, files=["out", "metrics"])
