"""Prior sub-command: ``train-prior`` (marginal or conditional flow prior on simulated vessel data)."""

from __future__ import annotations

import argparse

from torch import Tensor

from pa_recon.cli.common import geometry_from_params, load_params, pick_device
from pa_recon.errors import PAReconError
from pa_recon.priors import cached_training_set, make_training_images, make_training_pairs, train_prior


def cmd_train_prior(args: argparse.Namespace) -> None:
    """Simulate the training set of the ``priors`` params section and train one prior into ``--out-dir``."""
    settings = load_params(args.params, "priors")
    phantoms = load_params(args.params, "phantoms")
    grid, array = geometry_from_params(args.params)
    try:
        data, flow, train = settings["data"], settings["flow"][args.kind], dict(settings["train"][args.kind])
    except KeyError as err:
        raise PAReconError(f"missing setting {err}", file=args.params, field=f"priors ({args.kind})") from None
    family = {"source": data.get("source", "procedural"), "vessel_params": data.get("vessels"),
              "mask_dir": phantoms.get("vessel_masks_dir"), "split": data.get("split", "train"),
              "refine": int(phantoms.get("refine", 2)), "seed": int(data.get("seed", 0))}
    device = pick_device(args.device)
    train.setdefault("device", device.type)

    def make() -> tuple[Tensor, Tensor | None]:
        if args.kind == "conditional":
            return make_training_pairs(int(data["n"]), grid, array, snr_db_range=tuple(data["snr_db_range"]),
                                       device=device, **family)
        return make_training_images(int(data["n"]), grid, **family)[0], None

    made_as = {"data": data, "phantoms": phantoms}
    x, y = cached_training_set(args.out_dir, {"kind": args.kind, "geometry": load_params(args.params, "geometry"),
                                             **made_as}, make)
    train_prior(args.kind, flow, train, x, y, grid=grid, array=array, out_dir=args.out_dir,
                alpha=float(settings.get("alpha", 0.05)), extra_params=made_as)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train-prior``."""
    p = sub.add_parser("train-prior", help="train a marginal or conditional flow prior (writes OUT_DIR/prior.pt)")
    p.add_argument("--kind", required=True, choices=("marginal", "conditional"))
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=cmd_train_prior)
