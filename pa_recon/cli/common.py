"""Helpers shared by the sub-commands: params sections, output paths, devices, batched progress."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml
from tqdm import tqdm

from pa_recon.checks import check_count, check_number
from pa_recon.data.families import family_vessels, make_phantoms
from pa_recon.errors import PAReconError
from pa_recon.physics import Grid, LinearArray
from pa_recon.physics.operator import check_device

T = TypeVar("T")


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats (YAML 1.1 reads ``1e-3``, without a dot, as a string)."""


_FLOAT = "tag:yaml.org,2002:float"
_ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
# Appended after the int resolver, so that plain integers, which this pattern also matches, stay ints.
_ParamsLoader.add_implicit_resolver(
    _FLOAT, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))


def load_params(path: str | Path, section: str) -> dict[str, Any]:
    """The ``section`` mapping of a params YAML file (floats as in YAML 1.2: ``1e-3`` is a number).

    Other top-level keys are allowed (a params file may hold sections for other tools), but one spelled almost
    like ``section`` is named: in the error when ``section`` is missing, in a warning when both are there.
    """
    try:
        params = yaml.load(Path(path).read_text(), Loader=_ParamsLoader)
    except OSError as err:
        raise PAReconError(f"cannot read params file ({err.strerror})", file=path) from None
    except UnicodeDecodeError as err:
        raise PAReconError(f"cannot read params file (not UTF-8 text: {err.reason} at byte {err.start})",
                           file=path) from None
    except yaml.YAMLError as err:
        raise PAReconError(f"not valid YAML: {_yaml_problem(err)}", file=path) from None
    keys = [str(key) for key in params if key != section] if isinstance(params, dict) else []
    near = difflib.get_close_matches(section, keys, n=1, cutoff=0.75)
    if not isinstance(params, dict) or not isinstance(params.get(section), dict):
        raise PAReconError("missing section" + (f" (there is a section {near[0]!r})" if near else ""), file=path,
                           field=section)
    if near:
        warnings.warn(f"{path}: section {near[0]!r} is not read; the settings are in {section!r}", stacklevel=2)
    return params[section]


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: where and what the problem is, and what was being read (its ``context``)."""
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem_mark is None:
        return " ".join(str(err).split())
    mark, context = err.problem_mark, err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: {err.problem}"
    if err.context and context is not None:
        where += f" ({err.context} from line {context.line + 1}, column {context.column + 1})"
    return where


def benchmark_profile(path: str | Path, required: Sequence[str], profile_required: Sequence[str] = (), *,
                      evaluation: Callable[[Mapping[str, Any]], T], optional: Sequence[str] = (),
                      profile_optional: Sequence[str] = ()) -> tuple[dict[str, Any], str, dict[str, Any], T]:
    """The ``benchmark`` section of a benchmark params file (which must hold ``profile`` and the ``required`` keys,
    and may hold the ``optional`` ones), the name of its active profile, that profile's section of ``profiles``
    (which must hold ``profile_required`` and may hold ``smoke``, ``cpu_threads`` and ``profile_optional``; any
    other key is an error) and its evaluation settings, ``evaluation(profile["eval"])`` (checked here, so that a
    typo there stops a training before it starts, not the evaluation after it).

    Applies the profile's optional ``cpu_threads`` (torch's CPU threads; absent or null: torch's default).
    """
    bench = check_keys(load_params(path, "benchmark"), ("profile", *required, *optional), file=path,
                       field="benchmark", required=("profile", *required))
    profiles = load_params(path, "profiles")
    name = bench["profile"]
    profile = profiles.get(name)
    if not isinstance(profile, dict):
        raise PAReconError(f"profile {name!r} is not defined; defined: {sorted(profiles)}", file=path,
                           field="benchmark.profile")
    profile = check_keys(profile, ("smoke", "cpu_threads", *profile_required, *profile_optional), file=path,
                         field=f"profiles.{name}", required=profile_required)
    with params_key(path, f"profiles.{name}.eval"):
        evaluated = evaluation(profile.get("eval") or {})
    apply_cpu_threads(profile.get("cpu_threads"), path, f"profiles.{name}.cpu_threads")
    return bench, name, profile, evaluated


def apply_cpu_threads(threads: object, file: str | Path, field: str) -> None:
    """Set torch's CPU threads (intra-op) for this process to ``threads``, a count >= 1 read from the params key
    ``field`` of ``file``; ``None`` leaves torch's setting (``OMP_NUM_THREADS`` or one per core) as it is."""
    if threads is not None:
        torch.set_num_threads(check_count(threads, field, minimum=1, file=file))


def check_keys(values: object, known: Iterable[str], *, file: str | Path, field: str,
               required: Iterable[str] = ()) -> dict[str, Any]:
    """``values`` as a dict, if it is a mapping whose keys are all ``known`` and include the ``required`` ones; else a
    :class:`PAReconError` naming the params key ``field`` (so a typo is not silently ignored)."""
    if not isinstance(values, Mapping):
        raise PAReconError(f"expected a mapping, got {values!r}", file=file, field=field)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise PAReconError(f"unknown settings {unknown}; known: {sorted(known)}", file=file, field=field)
    missing = [key for key in required if key not in values]
    if missing:
        raise PAReconError(f"missing settings {missing}", file=file, field=field)
    return dict(values)


@contextmanager
def params_key(file: str | Path, key: str) -> Iterator[None]:
    """Name a :class:`PAReconError` raised inside (about a setting, with no file of its own) by the params ``file``
    and its key path under ``key`` (``priors.train.marginal`` + ``max_steps``)."""
    try:
        yield
    except PAReconError as err:
        if err.file is not None:
            raise
        raise err.under(key, file) from None


@contextmanager
def data_path_from(file: str | Path, key: str) -> Iterator[None]:
    """Add to a :class:`PAReconError` raised inside about a data file or folder (one that names a file other than the
    params ``file``) the params key that gave its path: ``... (the path comes from <key> in <file>)``."""
    try:
        yield
    except PAReconError as err:
        if err.file is None or Path(err.file) == Path(file):
            raise
        raise PAReconError(f"{err.message} (the path comes from {key} in {file})", file=err.file,
                           field=err.field) from None


#: Keys of ``geometry.array``: the element count and pitch, and the other fields of :class:`LinearArray`.
ARRAY_KEYS = ("n_elements", "pitch", *(f.name for f in fields(LinearArray) if f.name != "element_x"))
#: Keys of ``geometry.grid`` and ``geometry.array`` that are counts; the others are numbers (``center_frequency``
#: may also be null: an ideal sensor).
COUNT_KEYS = ("nx", "nz", "n_elements", "n_samples")


def geometry_from_params(path: str | Path) -> tuple[Grid, LinearArray]:
    """The reconstruction grid and the array from the ``geometry`` section (array given by count and pitch)."""
    geometry = check_keys(load_params(path, "geometry"), ("grid", "array"), file=path, field="geometry",
                          required=("grid", "array"))
    grid = check_keys(geometry["grid"], ("nx", "nz", "dx"), file=path, field="geometry.grid",
                      required=("nx", "nz", "dx"))
    array = check_keys(geometry["array"], ARRAY_KEYS, file=path, field="geometry.array",
                       required=("n_elements", "pitch"))
    grid = {key: _geometry_value(path, f"geometry.grid.{key}", value) for key, value in grid.items()}
    array = {key: _geometry_value(path, f"geometry.array.{key}", value) for key, value in array.items()}
    with params_key(path, "geometry"):
        return Grid(**grid), LinearArray.uniform(**array)


def _geometry_value(path: str | Path, key: str, value: object) -> float | None:
    """The geometry setting at the params key ``key``, checked: a count (>= 1), a number, or a null
    ``center_frequency``."""
    name = key.rsplit(".", 1)[-1]
    if name in COUNT_KEYS:
        return check_count(value, key, minimum=1, file=path)
    if name == "center_frequency" and value is None:
        return None
    return check_number(value, key, file=path)


def phantom_settings(path: str | Path) -> tuple[dict[str, Any], int]:
    """The ``phantoms`` section of the params file ``path`` and its ``refine`` (default 2; an integer >= 1)."""
    common = check_keys(load_params(path, "phantoms"), ("refine", "vessel_masks_dir"), file=path, field="phantoms")
    return common, check_count(common.get("refine", 2), "phantoms.refine", minimum=1, file=path)


def check_family(path: str | Path, key: str, family: Mapping[str, Any]) -> None:
    """Check the phantom family at the params key ``key`` (``test_sets.<name>`` or ``priors.data``) before any
    phantom is made: its ``n`` (>= 1) and ``seed`` where given, its ``source`` and its ``vessels``, and that
    ``phantoms.vessel_masks_dir`` is set where the source is "vessel_masks"."""
    for name, minimum in (("n", 1), ("seed", 0)):
        if name in family:
            check_count(family[name], f"{key}.{name}", minimum=minimum, file=path)
    source = family.get("source", "procedural")
    with params_key(path, key):
        family_vessels(source, family.get("vessels"))
    if source == "vessel_masks" and phantom_settings(path)[0].get("vessel_masks_dir") is None:
        raise PAReconError(f"{key}.source is 'vessel_masks' but phantoms.vessel_masks_dir is not set: name the folder "
                           "of vessel masks (e.g. ../shared/datasets/drive)", file=path,
                           field="phantoms.vessel_masks_dir")


def family_phantoms(path: str | Path, family: Mapping[str, Any], n: int, seed: int) -> tuple[Grid, np.ndarray]:
    """``n`` phantoms ``(n, nz, nx)`` of a phantom family (``source``, ``vessels``, ``split`` as in ``test_sets`` or
    ``priors.data``) on the simulation grid of the params file ``path``: its reconstruction grid refined
    ``phantoms.refine`` times (default 2). Returns that grid and the images."""
    common, refine = phantom_settings(path)
    grid, _ = geometry_from_params(path)
    fine = grid.refined(refine)
    with data_path_from(path, "phantoms.vessel_masks_dir"):
        images = make_phantoms(n, fine.nz, fine.nx, seed, source=family.get("source", "procedural"),
                               vessels=family.get("vessels"), mask_dir=common.get("vessel_masks_dir"),
                               split=family.get("split", "val"))
    return fine, images


#: Values of every command's ``--device`` option.
DEVICES = ("auto", "cpu", "cuda")


def add_device_option(parser: argparse.ArgumentParser, what: str) -> None:
    """A ``--device`` option (:data:`DEVICES`, default ``auto``: CUDA when present, else the CPU) for ``what``."""
    parser.add_argument("--device", default="auto", choices=DEVICES, help=f"{what}; auto: CUDA when present")


def pick_device(name: str, field: str = "--device", file: str | Path | None = None) -> torch.device:
    """``auto`` → CUDA when present, else CPU; any other name as :func:`check_device` takes it. ``field`` is the
    option or setting that gave ``name`` (a setting of the params ``file``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(name, field, file)


def training_folder(path: str | Path, flag: str, command: str) -> Path:
    """``path`` as a :class:`Path`, refusing a file (``last.pt``, say) where the option ``flag`` takes the training
    folder that ``command`` wrote."""
    if Path(path).is_file():
        raise PAReconError(f"is a file; {flag} takes the training folder that {command} wrote (run.json, last.pt)",
                           file=path, field=flag)
    return Path(path)


def batches(total: int, size: int, desc: str) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` scan ranges of at most ``size``, with a progress bar over scans."""
    with tqdm(total=total, desc=desc, unit="scan") as bar:
        for start in range(0, total, size):
            stop = min(total, start + size)
            yield start, stop
            bar.update(stop - start)


#: What ``pa-recon`` adds to "interrupted" for a training command (:func:`declare_outputs` with ``resumable``).
RESUME_HINT = "; run the same command again to resume from the last checkpoint"


def declare_outputs(parser: argparse.ArgumentParser, *, files: Sequence[str] = (), folders: Sequence[str] = (),
                    resumable: bool = False) -> None:
    """Name the arguments (``dest`` names) of a sub-command that are output files and output folders, for
    :func:`prepare_outputs`; ``resumable``: the command is a training that an interrupted run continues."""
    parser.set_defaults(output_files=tuple(files), output_folders=tuple(folders),
                        on_interrupt=RESUME_HINT if resumable else "")


def prepare_outputs(args: argparse.Namespace) -> list[Path]:
    """Check the output paths :func:`declare_outputs` named before any work, and create the missing folders that
    output files go into; returns the folders created (outermost first), for removal if the command fails.

    An output file must not be a folder nor one of the command's input files (the other arguments naming existing
    files); an output folder must not be a file; and the nearest existing folder above each output must be
    writable.
    """
    files = [(name, Path(value)) for name in getattr(args, "output_files", ()) if (value := getattr(args, name))]
    folders = [(name, Path(value)) for name in getattr(args, "output_folders", ()) if (value := getattr(args, name))]
    outputs = {name for name, _ in (*files, *folders)}
    inputs = [Path(v) for name, value in vars(args).items() if name not in outputs
              for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and Path(v).is_file()]
    for name, path in files:
        flag = "--" + name.replace("_", "-")
        if path.is_dir():
            raise PAReconError("is a folder; give a file name", file=path, field=flag)
        if path.exists() and any(path.samefile(i) for i in inputs):
            raise PAReconError("is also an input of this command; writing it would destroy that input",
                               file=path, field=flag)
        _check_writable(path.parent, flag)
    for name, path in folders:
        flag = "--" + name.replace("_", "-")
        if path.exists() and not path.is_dir():
            raise PAReconError("is a file; give a folder", file=path, field=flag)
        _check_writable(path, flag)
    created: list[Path] = []
    for _, path in files:
        missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        created += [p for p in reversed(missing) if p not in created]
    return created


def remove_empty_folders(folders: Sequence[Path]) -> None:
    """Remove ``folders`` (outermost first) that are still empty, innermost first."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty: the command wrote something there, or another process did


def _check_writable(path: Path, flag: str) -> None:
    """The nearest existing folder at or above ``path`` must be a writable folder."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise PAReconError(f"cannot create it: {existing} is a file", file=path, field=flag)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PAReconError(f"cannot write into {existing} (read-only or no permission)", file=path, field=flag)
