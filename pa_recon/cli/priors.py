"""Prior sub-command: ``train-prior`` (marginal or conditional flow prior on simulated vessel data)."""

from __future__ import annotations

import argparse

from torch import Tensor

from pa_recon.checks import check_number
from pa_recon.cli.common import (
    add_device_option,
    apply_cpu_threads,
    check_family,
    check_keys,
    data_path_from,
    declare_outputs,
    geometry_from_params,
    load_params,
    params_key,
    phantom_settings,
    pick_device,
)
from pa_recon.priors import (
    FlowPrior,
    SoftLogit,
    cached_training_set,
    flow_config_for,
    make_training_images,
    make_training_pairs,
    train_prior,
)
from pa_recon.priors.training import check_snr_range, validation_size
from pa_recon.recon.methods import PRIOR_KINDS
from pa_recon.train import TrainConfig
from pa_recon.train.tracking import check_tracking


#: Keys of ``priors.data``: how many training images, their family (as in ``test_sets``), seed and SNR range.
DATA_KEYS = ("n", "source", "vessels", "split", "seed", "snr_db_range")


def cmd_train_prior(args: argparse.Namespace) -> None:
    """Simulate the training set of the ``priors`` params section and train one prior into ``--out-dir``."""
    settings = check_keys(load_params(args.params, "priors"), ("alpha", "data", "flow", "train"), file=args.params,
                          field="priors", required=("data", "flow", "train"))
    phantoms, refine = phantom_settings(args.params)
    grid, array = geometry_from_params(args.params)
    data = check_keys(settings["data"], DATA_KEYS, file=args.params, field="priors.data",
                      required=("n", "snr_db_range") if args.kind == "conditional" else ("n",))
    flow, train = (check_keys(settings[part], PRIOR_KINDS, file=args.params, field=f"priors.{part}",
                              required=(args.kind,))[args.kind] for part in ("flow", "train"))
    train = dict(train)
    # Before the training data are made, so that their simulation runs on the same threads.
    apply_cpu_threads(train.pop("cpu_threads", None), args.params, f"priors.train.{args.kind}.cpu_threads")
    family = {"source": data.get("source", "procedural"), "vessel_params": data.get("vessels"),
              "mask_dir": phantoms.get("vessel_masks_dir"), "split": data.get("split", "train"),
              "refine": refine, "seed": data.get("seed", 0)}
    device = pick_device(args.device)
    train.setdefault("device", device.type)
    # Every setting is checked before the training data are made (and kept in --out-dir), which takes minutes on a
    # large profile.
    check_family(args.params, "priors.data", data)
    alpha = check_number(settings.get("alpha", 0.05), "priors.alpha", file=args.params)
    with params_key(args.params, "priors"):
        SoftLogit(alpha)  # checks alpha's range
    with params_key(args.params, f"priors.flow.{args.kind}"):
        FlowPrior(flow_config_for(args.kind, flow, grid), grid, array)  # built, so that its layout is checked
    with params_key(args.params, f"priors.train.{args.kind}"):
        config = TrainConfig.from_dict({**train, "out_dir": args.out_dir})
        pick_device(config.device, field="device")
        check_tracking(config.tracking, config.tracking_uri)
    with params_key(args.params, "priors.data"):
        validation_size(data["n"], config.batch_size)
        snr_db_range = check_snr_range(data["snr_db_range"]) if args.kind == "conditional" else None

    def make() -> tuple[Tensor, Tensor | None]:
        with data_path_from(args.params, "phantoms.vessel_masks_dir"):
            if snr_db_range is not None:
                return make_training_pairs(data["n"], grid, array, snr_db_range=snr_db_range, device=device,
                                           **family)
            return make_training_images(data["n"], grid, **family)[0], None

    made_as = {"data": data, "phantoms": phantoms}
    x, y = cached_training_set(args.out_dir, {"kind": args.kind, "geometry": load_params(args.params, "geometry"),
                                             **made_as}, make)
    train_prior(args.kind, flow, train, x, y, grid=grid, array=array, out_dir=args.out_dir, alpha=alpha,
                extra_params=made_as)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train-prior``."""
    p = sub.add_parser("train-prior", help="train a marginal or conditional flow prior (writes OUT_DIR/prior.pt)")
    p.add_argument("--kind", required=True, choices=PRIOR_KINDS, help="p(x) or p(x | c), c made from the data")
    p.add_argument("--params", default="params.yaml", help="params file (geometry, phantoms, priors)")
    p.add_argument("--out-dir", required=True, help="training folder (checkpoints, run.json, prior.pt)")
    add_device_option(p, "where to simulate the training data, and to train unless priors.train.<kind>.device says")
    p.set_defaults(func=cmd_train_prior)
    declare_outputs(p, folders=["out_dir"], resumable=True)
