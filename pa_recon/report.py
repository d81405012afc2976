"""Evaluation summaries and figures: metrics tables as JSON/CSV for DVC, PNG panels via matplotlib.

Images compared here are initial-pressure maps against a ground truth in [0, 1], so PSNR and SSIM use a fixed
data range of 1.0 (``metrics.psnr``/``metrics.ssim`` with ``data_range=1.0``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from pa_recon.errors import PAReconError
from pa_recon.metrics import (
    calibration_error,
    flag_auroc,
    interval_coverage,
    psnr,
    relative_error,
    ssim,
)

DATA_RANGE = 1.0
METRICS = {
    "psnr": lambda x, ref: psnr(x, ref, data_range=DATA_RANGE),
    "ssim": lambda x, ref: ssim(x, ref, data_range=DATA_RANGE),
    "rel_error": relative_error,
}


def per_scan_metrics(truth: np.ndarray, images: Mapping[str, np.ndarray],
                     maps: Mapping[str, np.ndarray] | None = None,
                     scan_values: Mapping[str, np.ndarray] | None = None,
                     labels: Mapping[str, Sequence[str]] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``{method: {metric: (N,)}}`` for images ``(N, nz, nx)`` against ``truth`` ``(N, nz, nx)``.

    A method with a map ``<method>_std`` also gets the coverage of its 68 % and 95 % intervals and its
    calibration error, from the sample counts ``<method>_samples`` where it has them (Student's intervals; see
    :func:`pa_recon.metrics.interval_coverage`); with ``<method>_flag_score``, the AUROC of the flags for errors
    above 0.2. Its per-scan values ``<method>_<value>`` ``(N,)`` (``chi2``, ``scan_flag``, ...) are carried over
    as metrics ``<value>``, a flag as 0/1 (so its mean is the fraction of flagged scans), and a value with
    ``labels`` (integer codes) as one 0/1 metric ``<value>_<label>`` per label (e.g. ``stop_reason_discrepancy``).
    """
    maps, scan_values, labels = maps or {}, scan_values or {}, labels or {}
    out = {m: {name: fn(img, truth) for name, fn in METRICS.items()} for m, img in images.items()}
    for m, img in images.items():
        if (std := maps.get(f"{m}_std")) is not None:
            n = scan_values.get(f"{m}_samples")
            out[m]["coverage68"] = interval_coverage(img, std, truth, 0.68, n)
            out[m]["coverage95"] = interval_coverage(img, std, truth, 0.95, n)
            out[m]["calibration_error"] = calibration_error(img, std, truth, n_samples=n)
        if (flags := maps.get(f"{m}_flag_score")) is not None:
            out[m]["flag_auroc"] = flag_auroc(flags, img, truth)
        for value, (name, v) in _values_of(m, images, scan_values).items():
            if name in labels:
                out[m].update({f"{value}_{label}": (v == code).astype(np.float64)
                               for code, label in enumerate(labels[name])})
            else:
                out[m][value] = v.astype(np.float64)
    return out


#: The metrics that :func:`add_paired_gains` compares (higher is better for each), with the decimals the report
#: shows them with.
PAIRED_METRICS = {"psnr": 2, "ssim": 3}


def add_paired_gains(per_scan: dict[str, dict[str, np.ndarray]], ranking: Sequence[str]) -> None:
    """Add to each method of ``ranking`` after the first, in place, its per-scan gain over the method before it:
    ``<metric>_gain_over_<previous>`` (its metric minus the previous method's on the same scan) and
    ``<metric>_won_over_<previous>`` (1 where the gain is positive, so the mean is the fraction of scans won), for
    each metric of :data:`PAIRED_METRICS`. Scans differ far more among themselves than methods differ on one scan,
    so the spread of these paired gains, not that of each method's metric, says whether an ordering holds.
    """
    unknown = [m for m in ranking if m not in per_scan]
    if unknown:
        raise PAReconError(f"methods {unknown} are not among those evaluated ({', '.join(per_scan)})", field="ranking")
    for previous, method in zip(ranking, ranking[1:]):
        for metric in PAIRED_METRICS:
            gain = per_scan[method][metric] - per_scan[previous][metric]
            per_scan[method][f"{metric}_gain_over_{previous}"] = gain
            per_scan[method][f"{metric}_won_over_{previous}"] = (gain > 0).astype(np.float64)


def _values_of(method: str, methods: Iterable[str],
               scan_values: Mapping[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    """``{value: (dataset name, values)}`` of the per-scan values named ``<method>_<value>``; a name that a longer
    method's name also prefixes (``map_latent_chi2`` for ``map`` and ``map_latent``) belongs to that method."""
    prefix = f"{method}_"
    longer = tuple(f"{m}_" for m in methods if m != method and m.startswith(prefix))
    return {name[len(prefix):]: (name, v) for name, v in scan_values.items()
            if name.startswith(prefix) and not name.startswith(longer)}


def summarise(per_scan: Mapping[str, Mapping[str, np.ndarray]], groups: np.ndarray) -> dict[str, dict[str, dict]]:
    """``{group: {method: {metric: mean, metric_std: std, n: count}}}``; ``groups`` ``(N,)`` labels each scan.

    Groups come in the order of their first scan, methods in the order of ``per_scan``. Means and stds skip NaN
    (e.g. a flag AUROC of a scan without large errors).
    """
    out: dict[str, dict[str, dict]] = {}
    for g in dict.fromkeys(groups.tolist()):
        mask = groups == g
        out[str(g)] = {
            method: {
                **{k: float(np.nanmean(v[mask])) for k, v in values.items()},
                **{f"{k}_std": float(np.nanstd(v[mask])) for k, v in values.items()},
                "n": int(mask.sum()),
            }
            for method, values in per_scan.items()
        }
    return out


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_metrics_json(path: str | os.PathLike[str], summary: Mapping[str, object]) -> None:
    """Write the summary as JSON that ``dvc metrics show`` reads, its keys in the summary's order (so ``evaluate``'s
    methods in the order of its reconstruction files, which :func:`results_table` keeps)."""
    _atomic_text(Path(path), json.dumps(summary, indent=2) + "\n")


#: The statistics of every method in a summary that :func:`results_table` shows.
SUMMARY_KEYS = ("n", "psnr", "psnr_std", "ssim", "ssim_std")


def read_metrics_json(path: str | os.PathLike[str]) -> dict[str, dict[str, dict[str, float]]]:
    """The summary (:func:`summarise`) in a metrics JSON that ``pa-recon evaluate`` wrote; a :class:`PAReconError`
    for a file that cannot be read or holds anything else (such as another tool's metrics)."""
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PAReconError(f"cannot read metrics ({err})", file=path) from None
    if not _is_summary(summary):
        raise PAReconError("not an evaluate metrics file (expected {group: {method: {" + ", ".join(SUMMARY_KEYS)
                           + ", ...}}})", file=path)
    return summary


def _is_summary(value: object) -> bool:
    """Whether ``value`` is ``{group: {method: {statistic: number}}}``, with at least one group, one method in each
    group and every statistic of :data:`SUMMARY_KEYS` in each method."""
    return isinstance(value, dict) and bool(value) and all(
        isinstance(group, dict) and group and all(
            isinstance(stats, dict) and all(isinstance(stats.get(k), (int, float)) for k in SUMMARY_KEYS)
            for stats in group.values())
        for group in value.values())


def write_per_scan_csv(path: str | os.PathLike[str], per_scan: Mapping[str, Mapping[str, np.ndarray]],
                       metric: str, groups: np.ndarray) -> None:
    """One row per scan (``scan``, ``group``, one column per method that has ``metric``) of ``metric``, for
    ``dvc plots``."""
    methods = [m for m, values in per_scan.items() if metric in values]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["scan", "group", *methods])
    for i, g in enumerate(groups.tolist()):
        writer.writerow([i, g, *(f"{per_scan[m][metric][i]:.6g}" for m in methods)])
    _atomic_text(Path(path), text.getvalue())


Summaries = Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]


def results_table(summaries: Summaries) -> str:
    """Markdown tables with a row per test set and group and a column per method: PSNR and SSIM (mean ± std);
    then, where methods report it, the mean χ² of their images and the fraction of flagged scans; then, where
    methods have paired gains (:func:`add_paired_gains`), a column per gain: mean ± std of the per-scan gain in PSNR
    and SSIM, and the scans won.

    ``summaries`` maps a test-set name to the output of :func:`summarise`. Rows and columns keep the order of the
    summaries: sets, then groups, then methods (and the gains of each method) in order of first appearance.
    """
    text = _table(summaries, "PSNR [dB] / SSIM",
                  lambda r: f"{r['psnr']:.2f} ± {r['psnr_std']:.2f} / {r['ssim']:.3f} ± {r['ssim_std']:.3f}")
    if any("chi2" in r for s in summaries.values() for g in s.values() for r in g.values()):
        text += "\n" + _table(summaries, "mean χ² (flagged scans)", _consistency_cell)
    if pairs := _gain_pairs(summaries):
        text += "\n" + _columns_table(summaries, {f"{m} over {previous}": (m, partial(_gain_cell, previous=previous))
                                                  for m, previous in pairs})
    return text


def _gain_pairs(summaries: Summaries) -> list[tuple[str, str]]:
    """``(method, previous)`` of every paired gain in the summaries, in order of appearance."""
    prefix = "psnr_gain_over_"
    pairs = ((m, k[len(prefix):]) for s in summaries.values() for g in s.values() for m, r in g.items() for k in r
             if k.startswith(prefix) and not k.endswith("_std"))
    return list(dict.fromkeys(pairs))


def _gain_cell(r: Mapping[str, float], previous: str) -> str | None:
    """Mean ± std of a method's paired gains over ``previous`` (:data:`PAIRED_METRICS`), and the fractions of scans
    won; None where the method has none (a test set evaluated without that ranking)."""
    if f"psnr_gain_over_{previous}" not in r:
        return None
    gains = " / ".join(f"{r[f'{k}_gain_over_{previous}']:+.{d}f} ± {r[f'{k}_gain_over_{previous}_std']:.{d}f}"
                       for k, d in PAIRED_METRICS.items())
    won = "/".join(f"{r[f'{k}_won_over_{previous}']:.0%}" for k in PAIRED_METRICS)
    return f"{gains} (won {won})"


def _consistency_cell(r: Mapping[str, float]) -> str | None:
    """A method's mean χ², with the fraction of flagged scans where it flags scans; None without χ²."""
    if "chi2" not in r:
        return None
    flagged = f" ({r['scan_flag']:.0%})" if "scan_flag" in r else ""
    return f"{r['chi2']:.3g}{flagged}"


Cell = Callable[[Mapping[str, float]], str | None]


def _table(summaries: Summaries, title: str, cell: Cell) -> str:
    """One Markdown table: columns ``<method> <title>``, cells ``cell(summary of the method)`` ("–" for None)."""
    methods = dict.fromkeys(m for s in summaries.values() for g in s.values() for m in g)
    return _columns_table(summaries, {f"{m} {title}": (m, cell) for m in methods})


def _columns_table(summaries: Summaries, columns: Mapping[str, tuple[str, Cell]]) -> str:
    """One Markdown table with a row per test set and group; ``columns`` maps a header to the method it shows and
    its cell function (a missing method or a None cell shows "–")."""
    lines = ["| test set | group | n | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for name, summary in summaries.items():
        for group, per_method in summary.items():
            n = next(iter(per_method.values()))["n"]
            cells = [(cell(r) if (r := per_method.get(m)) else None) or "–" for m, cell in columns.values()]
            lines.append(f"| {name} | {group} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` atomically."""
    _atomic_text(Path(path), text)


def save_panel(path: str | os.PathLike[str], truth: np.ndarray | None, data: np.ndarray,
               images: Mapping[str, np.ndarray], title: str, extent_mm: Sequence[float],
               maps: Mapping[str, np.ndarray] | None = None) -> None:
    """One scan as a row of panels: data, truth (if known), each method's image, then each map.

    ``truth``, images and maps are ``(nz, nx)`` shown in ``extent_mm`` = (x_min, x_max, z_max, z_min) with the
    array at the top; images share the colour range [0, 1], each map (posterior std, flags ...) has its own
    range from 0; ``data`` is ``(n_elements, n_samples)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels: list[tuple[str, np.ndarray]] = ([("truth", truth)] if truth is not None else []) + list(images.items())
    extra = list((maps or {}).items())
    fig, axes = plt.subplots(1, len(panels) + len(extra) + 1, figsize=(2.6 * (len(panels) + len(extra) + 1), 2.9),
                             squeeze=False)
    axes = axes[0]
    limit = float(np.abs(data).max()) or 1.0
    axes[0].imshow(data.T, aspect="auto", cmap="seismic", vmin=-limit, vmax=limit)
    axes[0].set(title="data", xlabel="element", ylabel="sample")
    for k, (ax, (name, img)) in enumerate(zip(axes[1:], panels + extra)):
        is_map = k >= len(panels)
        top = (float(img.max()) or 1.0) if is_map else 1.0
        ax.imshow(img, cmap="viridis" if is_map else "inferno", vmin=0.0, vmax=top, extent=tuple(extent_mm))
        ax.set(title=name, xlabel="x [mm]")
    axes[1].set_ylabel("depth [mm]")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
