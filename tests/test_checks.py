"""The one set of validators: each names the argument and what was expected,
with TypeError for a wrong kind of value and ValueError for a wrong value; the
argparse adapters give the same words in one line."""

import argparse
import math
import re

import numpy as np
import pytest

from xpnet import checks


@pytest.mark.parametrize(
    "check, good, bad_type, bad_value, words",
    [
        (checks.positive_int, 3, 2.5, 0, "must be a positive int"),
        (checks.non_negative_int, 0, "1", -1, "must be an int >= 0"),
        (checks.positive_float, 0.5, "x", 0.0, "must be a positive finite float"),
        (checks.non_negative_float, 0.0, None, -1e-9, "must be a finite float >= 0"),
        (checks.finite_float, -2.0, "x", math.nan, "must be a finite float"),
        (checks.share, 0.25, "x", 1.0, "must be a share in (0, 1)"),
    ],
)
def test_scalar_checks(check, good, bad_type, bad_value, words):
    assert check("arg", good) == good
    with pytest.raises(TypeError, match=re.escape(f"arg {words}") + ".*got"):
        check("arg", bad_type)
    with pytest.raises(ValueError, match=re.escape(f"arg {words}, got")):
        check("arg", bad_value)


def test_booleans_are_not_numbers_and_numpy_scalars_are():
    with pytest.raises(TypeError):
        checks.positive_int("n", True)
    assert checks.positive_int("n", np.int64(4)) == 4
    assert isinstance(checks.positive_int("n", np.int64(4)), int)
    assert checks.positive_float("lr", np.float32(0.5)) == 0.5


def test_one_of_log_range_and_sizes():
    assert checks.one_of("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"mode='c' is not known; expected one of \['a', 'b'\]"):
        checks.one_of("mode", "c", ("b", "a"))
    assert checks.log_range("r", ("1e-3", 1)) == (1e-3, 1.0)
    with pytest.raises(ValueError, match="0 < low <= high"):
        checks.log_range("r", (1.0, 0.1))
    with pytest.raises(ValueError, match="two numbers"):
        checks.log_range("r", (1.0,))
    assert checks.sizes("hidden", (3, 4)) == [3, 4]
    with pytest.raises(TypeError, match=r"one layer: \[5\]"):
        checks.sizes("hidden", 5)
    with pytest.raises(ValueError, match="at least one size"):
        checks.sizes("hidden", [])
    assert checks.sizes("hidden", [], allow_empty=True) == []
    with pytest.raises(ValueError, match=r"hidden\[1\] must be a positive int"):
        checks.sizes("hidden", [3, 0])


@pytest.mark.parametrize(
    "check, text, value",
    [
        (checks.positive_int, "7", 7),
        (checks.positive_float, "1e-3", 1e-3),
        (checks.sizes, "100,50", [100, 50]),
        (checks.log_range, "1e-6,1e-2", (1e-6, 1e-2)),
        (checks.share, "0.2", 0.2),
    ],
)
def test_argparse_adapters_parse(check, text, value):
    assert checks.argparse_type(check)(text) == value


@pytest.mark.parametrize(
    "check, text, words",
    [
        (checks.positive_int, "0", "must be a positive int, got 0"),
        (checks.positive_int, "x", "must be an int, got 'x'"),
        (checks.sizes, "10,0", "item 1 must be a positive int, got 0"),
        (checks.sizes, "a", "positive ints separated by commas"),
        (checks.share, "1.5", "must be a share in (0, 1), got 1.5"),
    ],
)
def test_argparse_adapters_fail_in_one_line(check, text, words):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        checks.argparse_type(check)(text)
    assert str(info.value) == words or words in str(info.value)
    assert "\n" not in str(info.value) and "the value" not in str(info.value)


def test_check_size_names_the_size():
    assert checks.check_size("hidden_size", 50) == 50
    with pytest.raises((TypeError, ValueError), match="hidden_size"):
        checks.check_size("hidden_size", 0)
