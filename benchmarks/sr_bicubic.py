"""The bicubic super-resolution baseline on Set5 and Set14 under the standard protocol, next to published figures.

Usage: ``python benchmarks/sr_bicubic.py [--root DATASETS] [--scale 4] [--json out.json]``. For each HR image:
modcrop to a multiple of the scale, LR = bicubic ×1/scale (MATLAB ``imresize`` convention) rounded to 8 bits,
SR = bicubic ×scale of the LR rounded to 8 bits. Prints a Markdown table of the set means: PSNR/SSIM on Y with a
``scale``-pixel shave (single-channel files such as Set14's bridge on their grey levels, as the MATLAB scripts do),
the same without that grey rule, the published ×4 bicubic figures, full-image RGB PSNR/SSIM (SRFlow's protocol)
and LR-PSNR (the SR output downscaled again against the LR). ``--json`` also writes every per-image figure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pa_recon import sr_eval
from pa_recon.data.sr_images import downscale, is_greyscale, list_images, modcrop, read_image, to_uint8, upscale

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SETS = {"Set5": "set5", "Set14": "set14"}
#: Published ×4 bicubic figures (Y, shave 4): PSNR dB, SSIM (SRCNN/VDSR/EDSR tables).
REFERENCE_X4 = {"Set5": (28.42, 0.8104), "Set14": (26.00, 0.7027)}
METRICS = ("psnr_y", "ssim_y", "psnr_y_no_grey_rule", "ssim_y_no_grey_rule", "psnr_rgb", "ssim_rgb", "lr_psnr")


def evaluate_image(path: Path, scale: int) -> dict[str, object]:
    """Every metric of the bicubic baseline on one HR image file."""
    hr = modcrop(read_image(path), scale)
    lr = to_uint8(downscale(hr / 255.0, scale))
    sr = to_uint8(upscale(lr / 255.0, scale))
    grey = is_greyscale(path)
    return {"image": path.stem, "height": hr.shape[0], "width": hr.shape[1], "grey": grey,
            "psnr_y": sr_eval.psnr_y(sr, hr, scale, grey=grey), "ssim_y": sr_eval.ssim_y(sr, hr, scale, grey=grey),
            "psnr_y_no_grey_rule": sr_eval.psnr_y(sr, hr, scale), "ssim_y_no_grey_rule": sr_eval.ssim_y(sr, hr, scale),
            "psnr_rgb": sr_eval.psnr_rgb(sr, hr), "ssim_rgb": sr_eval.ssim_rgb(sr, hr),
            "lr_psnr": sr_eval.lr_psnr(sr, lr, scale)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder holding set5/ and set14/")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--json", help="also write the set means and per-image figures to this JSON file")
    args = parser.parse_args()

    per_image = {name: [evaluate_image(path, args.scale) for path in list_images(args.root / folder)]
                 for name, folder in SETS.items()}
    means = {name: {key: float(np.mean([row[key] for row in rows])) for key in METRICS}
             for name, rows in per_image.items()}

    print(f"Bicubic ×{args.scale} baseline (MATLAB-convention bicubic, 8-bit LR and SR), set means\n")
    print("| set | n | PSNR-Y dB | SSIM-Y | published | Δ PSNR-Y | Y without grey rule | PSNR-RGB dB | SSIM-RGB "
          "| LR-PSNR dB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, m in means.items():
        ref = REFERENCE_X4.get(name) if args.scale == 4 else None
        published = f"{ref[0]:.2f} / {ref[1]:.4f}" if ref else "–"
        delta = f"{m['psnr_y'] - ref[0]:+.3f}" if ref else "–"
        print(f"| {name} | {len(per_image[name])} | {m['psnr_y']:.3f} | {m['ssim_y']:.4f} | {published} | {delta} "
              f"| {m['psnr_y_no_grey_rule']:.3f} / {m['ssim_y_no_grey_rule']:.4f} | {m['psnr_rgb']:.3f} "
              f"| {m['ssim_rgb']:.4f} | {m['lr_psnr']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"scale": args.scale, "root": str(args.root), "reference_x4": REFERENCE_X4, "means": means,
                       "images": per_image},
                      f, indent=2)


if __name__ == "__main__":
    main()
