"""Checks of single settings: an integer count or a finite number, raising one :class:`PAReconError` style.

Every check names the ``field`` it concerns (and the ``file``, where given), states what it expects and shows what
it got, whether the value had the wrong type or lay out of bounds:

>>> check_count(64.5, "grid.nx", minimum=1)
Traceback (most recent call last):
    ...
pa_recon.errors.PAReconError: grid.nx: must be an integer >= 1, got 64.5
>>> check_number(float("nan"), "lam", minimum=0, file="params.yaml")
Traceback (most recent call last):
    ...
pa_recon.errors.PAReconError: params.yaml: lam: must be a finite number >= 0, got nan

Numpy integers and floats are accepted like Python ones and come back as Python ``int`` and ``float``; bools
(Python or numpy) are refused, as are strings, even ones that spell a number.
"""

from __future__ import annotations

import math
import operator
from os import PathLike

import numpy as np

from pa_recon.errors import PAReconError

__all__ = ["check_count", "check_number"]


def check_count(value: object, field: str, *, minimum: int | None = 0, maximum: int | None = None,
                file: str | PathLike[str] | None = None) -> int:
    """``value`` as a Python ``int`` if it is an integer (Python or numpy, not a bool; a float is refused even when
    integral, never truncated) in ``[minimum, maximum]`` (``None``: unbounded); else a :class:`PAReconError` naming
    ``field`` and ``file``.

    >>> check_count(np.int64(3), "n_iter", minimum=1)
    3
    >>> check_count(5, "n_bins", minimum=1, maximum=4)
    Traceback (most recent call last):
        ...
    pa_recon.errors.PAReconError: n_bins: must be an integer in [1, 4], got 5
    """
    try:
        if isinstance(value, bool | np.bool_):
            raise TypeError
        count = operator.index(value)  # type: ignore[call-overload]
    except TypeError:
        count = None
    if count is None or (minimum is not None and count < minimum) or (maximum is not None and count > maximum):
        raise PAReconError(f"must be an integer{_bounds(minimum, maximum, None, None)}, got {_shown(value)}",
                           file=file, field=field)
    return count


def check_number(value: object, field: str, *, minimum: float | None = None, maximum: float | None = None,
                 above: float | None = None, below: float | None = None,
                 file: str | PathLike[str] | None = None) -> float:
    """``value`` as a finite Python ``float`` if it is a real number (Python or numpy; not a bool, string or complex)
    that lies ``>= minimum``, ``<= maximum``, ``> above`` and ``< below`` (each where given); else a
    :class:`PAReconError` naming ``field`` and ``file``.

    >>> check_number(np.float32(0.5), "level", above=0, below=1)
    0.5
    >>> check_number(1, "level", above=0, below=1)
    Traceback (most recent call last):
        ...
    pa_recon.errors.PAReconError: level: must be a finite number in (0, 1), got 1
    >>> check_number("1e-3", "lam")
    Traceback (most recent call last):
        ...
    pa_recon.errors.PAReconError: lam: must be a finite number, got '1e-3'
    """
    if minimum is not None and above is not None or maximum is not None and below is not None:
        raise TypeError("give at most one lower bound (minimum or above) and one upper bound (maximum or below)")
    try:
        if isinstance(value, str | bytes | bool | np.bool_ | complex | np.complexfloating):
            raise TypeError
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    ok = (math.isfinite(number) and (minimum is None or number >= minimum) and (maximum is None or number <= maximum)
          and (above is None or number > above) and (below is None or number < below))
    if not ok:
        raise PAReconError(f"must be a finite number{_bounds(minimum, maximum, above, below)}, got {_shown(value)}",
                           file=file, field=field)
    return number


def _bounds(minimum: float | None, maximum: float | None, above: float | None, below: float | None) -> str:
    """The bounds as a message fragment: ``" >= 0"``, ``" < 1"``, ``" in (0, 1]"``, or nothing."""
    low = minimum if above is None else above
    high = maximum if below is None else below
    if low is not None and high is not None:
        return f" in {'[' if above is None else '('}{_text(low)}, {_text(high)}{']' if below is None else ')'}"
    if low is not None:
        return f" {'>=' if above is None else '>'} {_text(low)}"
    if high is not None:
        return f" {'<=' if below is None else '<'} {_text(high)}"
    return ""


def _text(bound: float) -> str:
    """A bound as written in a message: ``0`` and ``1`` for 0.0 and 1.0, else as Python writes it."""
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e15 else repr(float(bound))


def _shown(value: object) -> str:
    """``value`` as a message shows it: numpy scalars as the Python values they hold (``2.5``, not
    ``np.float64(2.5)``), everything else by its ``repr``."""
    return repr(value.item() if isinstance(value, np.generic) else value)
