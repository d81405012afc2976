"""pa_recon.checks: which values each check accepts (and returns as Python numbers) and how it names a refusal."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from pa_recon.checks import check_count, check_number
from pa_recon.errors import PAReconError


@pytest.mark.parametrize("value, expected", [
    (3, 3), (0, 0), (np.int64(7), 7), (np.int32(2), 2), (np.uint8(255), 255), (np.array(4), 4), (10**20, 10**20),
])
def test_a_count_is_returned_as_a_python_int(value, expected):
    count = check_count(value, "n")
    assert count == expected and type(count) is int


@pytest.mark.parametrize("value, kwargs, message", [
    (2.5, {}, "must be an integer >= 0, got 2.5"),
    (2.0, {}, "must be an integer >= 0, got 2.0"),
    (np.float64(3.0), {}, "must be an integer >= 0, got 3.0"),
    (True, {}, "must be an integer >= 0, got True"),
    (np.bool_(True), {}, "must be an integer >= 0, got True"),
    ("3", {}, "must be an integer >= 0, got '3'"),
    (None, {}, "must be an integer >= 0, got None"),
    (-1, {}, "must be an integer >= 0, got -1"),
    (np.int64(0), {"minimum": 1}, "must be an integer >= 1, got 0"),
    (5, {"minimum": 1, "maximum": 4}, "must be an integer in [1, 4], got 5"),
    (5, {"minimum": None, "maximum": 4}, "must be an integer <= 4, got 5"),
    (1.5, {"minimum": None}, "must be an integer, got 1.5"),
])
def test_a_refused_count_names_its_field_and_file(value, kwargs, message):
    with pytest.raises(PAReconError) as err:
        check_count(value, "model.steps", file="params.yaml", **kwargs)
    assert (err.value.field, err.value.file, err.value.message) == ("model.steps", "params.yaml", message)
    assert str(err.value) == f"params.yaml: model.steps: {message}"


def test_count_bounds_are_inclusive_and_optional():
    assert check_count(1, "n", minimum=1, maximum=1) == 1
    assert check_count(-5, "n", minimum=None) == -5
    with pytest.raises(PAReconError) as err:
        check_count(-5, "n")
    assert err.value.file is None and str(err.value) == "n: must be an integer >= 0, got -5"


@pytest.mark.parametrize("value, expected", [
    (3, 3.0), (-2.5, -2.5), (np.int64(4), 4.0), (np.float32(0.25), 0.25), (np.float64(1e-3), 1e-3),
    (Fraction(1, 4), 0.25), (np.array(2.5), 2.5),
])
def test_a_number_is_returned_as_a_python_float(value, expected):
    number = check_number(value, "x")
    assert number == expected and type(number) is float


@pytest.mark.parametrize("value, message", [
    (True, "must be a finite number, got True"),
    (np.bool_(False), "must be a finite number, got False"),
    ("1e-3", "must be a finite number, got '1e-3'"),
    (b"1", "must be a finite number, got b'1'"),
    (None, "must be a finite number, got None"),
    ([1.0], "must be a finite number, got [1.0]"),
    (1 + 0j, "must be a finite number, got (1+0j)"),
    (np.complex128(1), "must be a finite number, got (1+0j)"),
    (math.nan, "must be a finite number, got nan"),
    (-math.inf, "must be a finite number, got -inf"),
    (np.float32(np.inf), "must be a finite number, got inf"),
    (10**400, f"must be a finite number, got {10**400!r}"),
])
def test_a_refused_number_names_its_field_and_file(value, message):
    with pytest.raises(PAReconError) as err:
        check_number(value, "simulate.snr_db", file="params.yaml")
    assert (err.value.field, err.value.file, err.value.message) == ("simulate.snr_db", "params.yaml", message)


@pytest.mark.parametrize("kwargs, inside, outside, bounds", [
    ({"minimum": 0}, [0, 0.0, 1e300], [-1e-300, -1], ">= 0"),
    ({"above": 0}, [1e-300, 3], [0, -0.0, -1], "> 0"),
    ({"maximum": 1}, [1, -5], [1.0000001], "<= 1"),
    ({"below": 1}, [0.999, -5], [1, 2], "< 1"),
    ({"minimum": 0, "maximum": 1}, [0, 0.5, 1], [-0.1, 1.1], "in [0, 1]"),
    ({"above": 0, "maximum": 1}, [1e-9, 1], [0, 1.5], "in (0, 1]"),
    ({"minimum": 0, "below": 1}, [0, 0.999], [1, -1], "in [0, 1)"),
    ({"above": 0, "below": 1}, [0.5, np.float32(0.5)], [0, 1, math.nan], "in (0, 1)"),
    ({"minimum": 1e-3}, [1e-3], [1e-4], ">= 0.001"),
    ({"minimum": -2.5, "maximum": 2.5}, [-2.5, 2.5], [-3], "in [-2.5, 2.5]"),
])
def test_number_bounds(kwargs, inside, outside, bounds):
    for value in inside:
        assert check_number(value, "level", **kwargs) == float(value)
    for value in outside:
        with pytest.raises(PAReconError) as err:
            check_number(value, "level", **kwargs)
        shown = repr(value.item() if isinstance(value, np.generic) else value)
        assert (err.value.field, err.value.file) == ("level", None)
        assert err.value.message == f"must be a finite number {bounds}, got {shown}", value


def test_a_refused_type_states_the_bounds_too():
    with pytest.raises(PAReconError) as err:
        check_number("0.5", "level", above=0, below=1, file="m.json")
    assert str(err.value) == "m.json: level: must be a finite number in (0, 1), got '0.5'"


def test_two_lower_or_two_upper_bounds_are_a_programming_error():
    with pytest.raises(TypeError):
        check_number(1, "x", minimum=0, above=0)
    with pytest.raises(TypeError):
        check_number(1, "x", maximum=2, below=2)
