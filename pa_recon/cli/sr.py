"""Super-resolution sub-commands: sr-train, sr-eval (the Set5/Set14 benchmark) and sr (a user's own image).

sr-train and sr-eval read a benchmark params file (pipelines/sr/params.yaml) with the sections ``benchmark``
(``profile``, ``data_root``, ``train_sets``, ``val_images``, ``test_sets``, ``scale``, ``seed``, ``tracking``,
``tracking_uri``, ``experiment``), ``profiles`` (per profile: ``patches``, ``model``, ``train`` with one section
per model, ``eval``, and optional ``cpu_threads`` and ``smoke``) and ``reference`` (published bicubic figures).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pa_recon.cli.common import (
    add_device_option,
    benchmark_profile,
    check_keys,
    data_path_from,
    declare_outputs,
    load_params,
    params_key,
    pick_device,
    training_folder,
)
from pa_recon.data.sr_images import is_greyscale, list_images, read_image, to_uint8
from pa_recon.errors import PAReconError
from pa_recon.report import write_text
from pa_recon.train import TrainConfig
from pa_recon.bench.sr_flow import (
    Evaluation,
    Method,
    SREvalConfig,
    SRFlow,
    SRRegressor,
    bicubic_method,
    build_sr_model,
    encoder_start,
    evaluate_methods,
    figure_crop,
    flow_method,
    load_sr_run,
    load_test_set,
    load_training_images,
    make_patch_pairs,
    regression_method,
    results_markdown,
    save_sr_figure,
    train_sr,
    uses_regression_encoder,
)
from pa_recon.train.runs import RUN_FILE, hardware_name, write_json
from pa_recon.train.tracking import start_tracker

_BENCHMARK_KEYS = ("data_root", "train_sets", "val_images", "test_sets", "scale", "seed", "tracking",
                   "tracking_uri", "experiment")
_PROFILE_KEYS = ("patches", "model", "train", "eval")


def _benchmark(args: argparse.Namespace) -> tuple[dict[str, Any], str, dict[str, Any], SREvalConfig]:
    """The checked ``benchmark`` section, active profile (name and section) and evaluation settings."""
    return benchmark_profile(args.params, _BENCHMARK_KEYS, _PROFILE_KEYS, evaluation=SREvalConfig.from_dict)


def cmd_sr_train(args: argparse.Namespace) -> None:
    """Train the flow or the regression baseline under the active profile, resuming a stopped run."""
    bench, profile_name, profile, evaluation = _benchmark(args)
    train_sections = check_keys(profile["train"], ("flow", "regression"), file=args.params,
                                field=f"profiles.{profile_name}.train", required=(args.model,))
    with params_key(args.params, f"profiles.{profile_name}.train.{args.model}"):
        config = TrainConfig.from_dict({
            **train_sections[args.model], "out_dir": args.out, "seed": bench["seed"], "tracking": bench["tracking"],
            "tracking_uri": bench["tracking_uri"], "experiment": bench["experiment"],
            "run_name": f"{args.model}-{profile_name}",
        })
    patches = check_keys(profile["patches"], ("size", "train", "val"), file=args.params,
                         field=f"profiles.{profile_name}.patches", required=("size", "train", "val"))
    scale, size = int(bench["scale"]), int(patches["size"])
    # The training builds the model again; built here, a bad model section is named by its key before any data.
    with params_key(args.params, f"profiles.{profile_name}.model"):
        build_sr_model(args.model, profile["model"], scale, size)
        encoder_start(args.model, profile["model"], args.regression)
    if args.regression and not uses_regression_encoder(args.model, profile["model"]):
        warnings.warn(f"--regression {args.regression} is ignored: only a flow with "
                      f"profiles.{profile_name}.model.encoder_from_regression true starts from a regression run",
                      stacklevel=1)
    _check_figure(bench, profile_name, evaluation, args.params)
    with data_path_from(args.params, "benchmark.data_root and benchmark.train_sets"):
        images = load_training_images(bench["data_root"], bench["train_sets"])
    n_val = int(bench["val_images"])
    if not 0 < n_val < len(images):
        raise PAReconError(f"must lie in 1 … {len(images) - 1}", file=args.params, field="benchmark.val_images")
    train = make_patch_pairs(images[:-n_val], scale, size, int(patches["train"]), bench["seed"])
    val = make_patch_pairs(images[-n_val:], scale, size, int(patches["val"]), bench["seed"] + 1)
    data = {"train_sets": list(bench["train_sets"]), "val_images": n_val, "patches": dict(patches),
            "seed": bench["seed"]}
    metrics = train_sr(args.model, profile["model"], config, train, val, scale,
                       settings={"data": data, "profile": profile_name}, encoder_from=args.regression,
                       extra_params={"kind": args.model, "profile": profile_name, "data": data})
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}))


def _flow_rows(flow: SRFlow, config: SREvalConfig) -> dict[str, Method]:
    return {f"flow τ={t:g}": flow_method(flow, t, config.samples, config.seed) for t in config.temperatures}


def _check_figure(bench: Mapping[str, Any], profile_name: str, config: SREvalConfig, params: str) -> None:
    """Refuse a figure whose test set or image is not there, from the names of the test folder's files (before any
    training or evaluation): PAReconError naming the params file and ``profiles.<name>.eval.figure.set`` or
    ``.image``."""
    if config.figure is None:
        return
    key, set_name, image = f"profiles.{profile_name}.eval.figure", config.figure["set"], config.figure["image"]
    if set_name not in bench["test_sets"]:
        raise PAReconError(f"no test set {set_name!r}; benchmark.test_sets has {sorted(bench['test_sets'])}",
                           file=params, field=f"{key}.set")
    with data_path_from(params, "benchmark.data_root and benchmark.test_sets"):
        names = [path.stem for path in list_images(Path(bench["data_root"]) / bench["test_sets"][set_name])]
    if image not in names:
        raise PAReconError(f"no image {image!r} in test set {set_name!r}; its images: {names}", file=params,
                           field=f"{key}.image")


def _load_run(path: str, flag: str, device: torch.device) -> tuple[SRFlow | SRRegressor, dict[str, Any],
                                                                    dict[str, Any]]:
    """:func:`load_sr_run` of the training folder given by the option ``flag``, which must not be a file."""
    return load_sr_run(training_folder(path, flag, "sr-train"), device)


def _run_note(name: str, record: dict[str, Any], checkpoint: dict[str, Any]) -> str:
    minutes = record["train_seconds"] / 60
    return (f"- {name}: {record['parameters']:,} parameters, {int(checkpoint['step'])} steps in "
            f"{minutes:.1f} min on {', '.join(record['hardware'])}.")


def cmd_sr_eval(args: argparse.Namespace) -> None:
    """Score bicubic, the regression baseline and the flow at each temperature on the test sets; write
    ``metrics.json`` (set means), ``per_image.json``, ``table.md`` and ``figure.png`` in ``--out``."""
    bench, profile_name, profile, config = _benchmark(args)
    reference = load_params(args.params, "reference")
    device = pick_device(config.device, f"profiles.{profile_name}.eval.device", args.params)
    scale = int(bench["scale"])
    _check_figure(bench, profile_name, config, args.params)
    with data_path_from(args.params, "benchmark.data_root and benchmark.test_sets"):
        test_sets = {name: load_test_set(Path(bench["data_root"]) / folder, scale)
                     for name, folder in bench["test_sets"].items()}
    figure, box = None, (0, 0, 0)
    if config.figure is not None:
        figure = next(image for image in test_sets[config.figure["set"]] if image.name == config.figure["image"])
        box = (config.figure["top"], config.figure["left"], config.figure["size"])
        with params_key(args.params, f"profiles.{profile_name}.eval"):
            figure_crop(figure, box)  # before loading the models and the evaluation, which takes minutes
    flow, flow_record, flow_ckpt = _load_run(args.flow, "--flow", device)
    regressor, reg_record, reg_ckpt = _load_run(args.regression, "--regression", device)
    if not isinstance(flow, SRFlow):
        raise PAReconError("not a flow run", file=Path(args.flow) / RUN_FILE, field="kind")
    if not isinstance(regressor, SRRegressor):
        raise PAReconError("not a regression run", file=Path(args.regression) / RUN_FILE, field="kind")
    for run, model in ((args.flow, flow), (args.regression, regressor)):
        if model.scale != scale:
            raise PAReconError(f"trained for ×{model.scale}, the benchmark is ×{scale}", file=Path(run) / RUN_FILE,
                               field="scale")
    methods: dict[str, Method] = {"bicubic": bicubic_method(scale), "regression (L1)": regression_method(regressor),
                                  **_flow_rows(flow, config)}
    start = time.perf_counter()
    results: dict[str, Evaluation] = {name: evaluate_methods(images, methods, scale, progress=True)
                                      for name, images in test_sets.items()}
    eval_seconds = time.perf_counter() - start
    out = Path(args.out)
    notes = [f"Profile `{profile_name}`; evaluation on {hardware_name(device)} in {eval_seconds / 60:.1f} min; "
             f"{config.samples} samples per image at each τ > 0, seed {config.seed}.", "",
             _run_note("regression", reg_record, reg_ckpt), _run_note("flow", flow_record, flow_ckpt), "",
             "PSNR/SSIM-Y: luma (BT.601), 4-pixel shave, grey images on their grey levels; RGB: full image, SSIM as "
             "scikit-image's default (SRFlow). Metrics of several samples are averaged per image; diversity is the "
             "per-pixel standard deviation over the samples in 8-bit levels."]
    if profile.get("smoke", False):
        notes = ["**SMOKE RUN**: small models trained for a few minutes on a CPU with small patches; the numbers "
                 "only show that the pipeline works.", "", *notes]
    table = results_markdown(results, scale, reference.get("bicubic_x4", {}) if scale == 4 else {}, "bicubic",
                             notes)
    out.mkdir(parents=True, exist_ok=True)
    if figure is not None:
        shown = {"bicubic": methods["bicubic"], "regression (L1)": methods["regression (L1)"],
                 "flow τ=0": flow_method(flow, 0.0, 1, config.seed),
                 "flow τ=0.8": flow_method(flow, 0.8, min(config.samples, 3), config.seed)}
        save_sr_figure(out / "figure.png", figure, shown, scale, box)
    write_text(out / "table.md", f"# ×{scale} super-resolution: profile `{profile_name}`\n\n{table}")
    write_json(out / "metrics.json", {name: ev.means for name, ev in results.items()})
    write_json(out / "per_image.json", {name: ev.per_image for name, ev in results.items()})
    if bench["tracking"]:
        _log_eval(bench, flow_ckpt, results, [n for n in methods if n.startswith("flow")], out)
        _log_eval(bench, reg_ckpt, results, ["regression (L1)"], out)
    print(table)


def _metric_name(row: str) -> str:
    """A method's name as MLflow accepts it: "flow τ=0.8" -> "flow_t0.8", "regression (L1)" -> "regression_L1"."""
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", row.replace("τ=", "t")).strip("_")


def _log_eval(bench: dict[str, Any], checkpoint: dict[str, Any], results: dict[str, Evaluation],
              rows: list[str], out: Path) -> None:
    """Log the evaluation rows of one model, the table and the figure to that model's MLflow run."""
    if not checkpoint.get("run_id"):
        return
    tracker = start_tracker(True, bench["tracking_uri"], bench["experiment"], None, checkpoint["run_id"])
    try:
        metrics = {f"eval/{set_name}/{_metric_name(row)}/{k}": v
                   for set_name, ev in results.items() for row in rows for k, v in ev.means[row].items()}
        tracker.log_metrics(metrics, int(checkpoint["step"]))
        for name in ("table.md", "figure.png"):
            if (out / name).is_file():
                tracker.log_artifact(out / name, "evaluation")
    finally:
        tracker.close("FINISHED")


def _write_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 RGB ``(H, W, 3)`` or grey ``(H, W)`` image atomically (a temporary file in the same folder, then
    a rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_sr(args: argparse.Namespace) -> None:
    """Super-resolve one image with a trained flow: ``--samples`` PNGs at ``--temperature`` in ``--out``; a grey
    image gives grey PNGs (the mean of the model's three channels)."""
    if args.samples < 1 or not args.temperature >= 0:
        raise PAReconError("--samples must be >= 1 and --temperature >= 0", field="--samples/--temperature")
    lr = read_image(args.image)
    grey = is_greyscale(args.image)
    device = pick_device(args.device)
    model, _, _ = _load_run(args.checkpoint, "--checkpoint", device)
    run_file = Path(args.checkpoint) / RUN_FILE
    if not isinstance(model, SRFlow):
        raise PAReconError("not a flow run (a regression baseline cannot draw samples)", file=run_file)
    if model.scale != args.scale:
        raise PAReconError(f"the model was trained for ×{model.scale}, --scale asks for ×{args.scale}",
                           file=run_file, field="scale")
    outputs = flow_method(model, args.temperature, args.samples, args.seed)(lr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    for k, image in enumerate(outputs):
        _write_png(out / f"{stem}_x{args.scale}_t{args.temperature:g}_{k}.png",
                   to_uint8(image.mean(axis=-1) if grey else image))
    deterministic = " (temperature 0 is deterministic: one image)" if len(outputs) < args.samples else ""
    print(f"{len(outputs)} image(s) of {outputs.shape[2]}×{outputs.shape[1]} written to {out}{deterministic}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the super-resolution sub-commands: sr-train, sr-eval, sr."""
    p = sub.add_parser("sr-train", help="train the SR flow or its L1 regression baseline (resumes a stopped run)")
    p.add_argument("--params", default="params.yaml", help="benchmark params file (benchmark, profiles)")
    p.add_argument("--model", required=True, choices=("flow", "regression"), help="which model to train")
    p.add_argument("--out", required=True, help="training folder (checkpoints, samples, run.json)")
    p.add_argument("--regression", help="trained regression folder whose encoder initialises the flow's "
                                        "(used when the profile's model.encoder_from_regression is true)")
    p.set_defaults(func=cmd_sr_train)
    declare_outputs(p, folders=["out"], resumable=True)

    p = sub.add_parser("sr-eval", help="Set5/Set14 tables (Y and RGB protocols, LR-PSNR, diversity) and a figure")
    p.add_argument("--params", default="params.yaml", help="benchmark params file (benchmark, profiles, reference)")
    p.add_argument("--flow", required=True, help="the flow's training folder")
    p.add_argument("--regression", required=True, help="the regression baseline's training folder")
    p.add_argument("--out", required=True, help="folder for table.md, metrics.json, per_image.json, figure.png")
    p.set_defaults(func=cmd_sr_eval)
    declare_outputs(p, folders=["out"])

    p = sub.add_parser("sr", help="super-resolve an image with a trained SR flow (PNG samples)")
    p.add_argument("image", help="the low-resolution image (PNG, JPEG, BMP, TIFF)")
    p.add_argument("--scale", type=int, default=4, help="must match the trained model")
    p.add_argument("--temperature", type=float, default=0.8, help="0: the deterministic (mean-like) output")
    p.add_argument("--samples", type=int, default=1, help="images to draw at the temperature")
    p.add_argument("--out", required=True, help="folder for the PNGs (<stem>_x<scale>_t<T>_<k>.png)")
    p.add_argument("--checkpoint", required=True,
                   help="the flow's training folder (the pipeline writes pipelines/sr/runs/flow)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    add_device_option(p, "where to run the flow")
    p.set_defaults(func=cmd_sr)
    declare_outputs(p, folders=["out"])
