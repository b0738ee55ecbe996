"""The one set of argument checks: bad input becomes one clear error.

Rules of this module:

* Every check names the argument and says what was expected, and raises
  ``TypeError`` for a wrong kind of thing (dtype, type) and ``ValueError`` for a
  wrong value (shape, range, NaN). Integral types of any library (``numpy.int64``)
  count as ints, real ones as floats; ``bool`` is neither.
* Scalar checks (:func:`positive_int`, :func:`non_negative_float`, ...) return
  the value as a plain Python ``int``/``float``; :func:`argparse_type` turns any
  of them into an ``argparse`` ``type=`` whose error is one line.
* Array checks run on the backend that holds the data (one reduction, one scalar
  back to the host); they never convert a device array with NumPy.
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
import re

from array_api_compat import array_namespace

from .backend import to_numpy
from .dtypes import same_dtype

__all__ = [
    "positive_int",
    "non_negative_int",
    "positive_float",
    "non_negative_float",
    "finite_float",
    "one_of",
    "share",
    "log_range",
    "sizes",
    "argparse_type",
    "check_size",
    "check_inputs",
    "check_targets",
    "check_step",
    "check_float_array",
    "host_memory",
    "fits_in_memory",
]


def positive_int(name: str, value) -> int:
    """An integer ``>= 1``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def non_negative_int(name: str, value) -> int:
    """An integer ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= 0, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value}")
    return value


def _real(name: str, value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}")
    return float(value)


def finite_float(name: str, value) -> float:
    """A finite real number."""
    value = _real(name, value, "a finite float")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite float, got {value}")
    return value


def positive_float(name: str, value) -> float:
    """A finite real number ``> 0``."""
    value = _real(name, value, "a positive finite float")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite float, got {value}")
    return value


def non_negative_float(name: str, value) -> float:
    """A finite real number ``>= 0``."""
    value = _real(name, value, "a finite float >= 0")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite float >= 0, got {value}")
    return value


def share(name: str, value) -> float:
    """A real number strictly between 0 and 1."""
    value = _real(name, value, "a share in (0, 1)")
    if not 0 < value < 1:
        raise ValueError(f"{name} must be a share in (0, 1), got {value}")
    return value


def one_of(name: str, value, choices) -> str:
    """One of ``choices`` (strings)."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not known; expected one of {sorted(choices)}")
    return value


def log_range(name: str, value) -> tuple[float, float]:
    """Two numbers ``0 < low <= high < inf`` (a log-uniform range)."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers (low, high), got {value!r}") from None
    if not 0 < low <= high < math.inf:
        raise ValueError(f"{name} must satisfy 0 < low <= high, got {value!r}")
    return low, high


def sizes(name: str, value, *, allow_empty: bool = False) -> list[int]:
    """A list (or tuple) of positive ints, e.g. hidden layer sizes."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        hint = f" (one layer: [{value}])" if isinstance(value, numbers.Integral) else ""
        raise TypeError(
            f"{name} must be a list of positive ints, got {type(value).__name__} {value!r}{hint}"
        )
    if not value and not allow_empty:
        raise ValueError(f"{name} must name at least one size, got []")
    return [positive_int(f"{name}[{i}]", v) for i, v in enumerate(value)]


def argparse_type(check, *args, **kwargs):
    """An ``argparse`` ``type=`` from a check: parses the text (int, float, a
    comma-separated list where the check takes one) and reports a failure as
    ``argparse.ArgumentTypeError`` (one line, naming what was expected)."""

    def parse(text: str):
        try:
            value = _parse_text(check, text)
            return check("the value", value, *args, **kwargs)
        except (TypeError, ValueError) as exc:
            # "the value[1] must be ..." -> "item 1 must be ...", "the value must" -> "must"
            message = re.sub(r"the value\[(\d+)\]", r"item \1", str(exc))
            message = message.replace("the value ", "").replace("the value=", "")
            raise argparse.ArgumentTypeError(message) from None

    parse.__name__ = check.__name__
    return parse


def _parse_text(check, text: str):
    if check in (positive_int, non_negative_int):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"the value must be an int, got {text!r}") from None
    if check in (positive_float, non_negative_float, finite_float, share):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"the value must be a number, got {text!r}") from None
    if check is sizes:
        try:
            return [int(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(
                f"the value must be positive ints separated by commas (e.g. 100,100), got {text!r}"
            ) from None
    if check is log_range:
        return text.split(",")
    return text


def host_memory() -> int | None:
    """Bytes of memory this machine has available now (Linux: MemAvailable of
    /proc/meminfo; elsewhere the physical memory), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def fits_in_memory(what: str, nbytes: int, available: int | None = None) -> None:
    """Refuse, before anything is allocated, what cannot fit in the machine's
    memory: ``what`` names the argument(s) that ask for ``nbytes``."""
    available = host_memory() if available is None else available
    if available is not None and nbytes > available:
        raise ValueError(
            f"{what}: about {nbytes / 2**30:.3g} GiB needed, and this machine has "
            f"{available / 2**30:.3g} GiB available"
        )


def check_size(name: str, value) -> int:
    """A positive integer layer size (:func:`positive_int`)."""
    return positive_int(name, value)


def check_float_array(name: str, a) -> None:
    """``a`` has a real floating dtype (integer and bool arrays are refused)."""
    try:
        xp = array_namespace(a)
    except TypeError:
        raise TypeError(
            f"{name} must be an array (NumPy or a backend's), got {type(a).__name__}"
        ) from None
    if not xp.isdtype(a.dtype, "real floating"):
        raise TypeError(
            f"{name} must have a real floating dtype (float32/float64), got {a.dtype}; "
            "convert it first, e.g. x.astype('float64') (integer pixels: divide by 255)"
        )


def check_inputs(x, input_size: int, name: str = "x"):
    """Validate a batch of inputs; returns it as 2-D ``(N, input_size)``.

    A 1-D ``x`` of length ``input_size`` is one sample, as in the book.
    """
    check_float_array(name, x)
    xp = array_namespace(x)
    if x.ndim == 1:
        x = xp.reshape(x, (1, -1))
    if x.ndim != 2 or x.shape[1] != input_size:
        raise ValueError(
            f"{name} must have shape (N, {input_size}) or ({input_size},), got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_targets(t, batch_size: int, output_size: int, name: str = "t"):
    """Validate targets; returns integer labels of shape ``(N,)`` on ``t``'s device.

    ``t`` is integer labels ``(N,)`` in ``[0, output_size)`` or one-hot
    ``(N, output_size)`` (any numeric dtype, as the book's ``one_hot_label=True``).
    """
    xp = array_namespace(t)
    if t.ndim == 0:
        t = xp.reshape(t, (1,))
    if t.ndim == 2 or (t.ndim == 1 and batch_size == 1 and t.shape[0] == output_size > 1):
        if t.ndim == 1:
            t = xp.reshape(t, (1, -1))
        if t.shape != (batch_size, output_size):
            raise ValueError(
                f"{name} (one-hot) must have shape ({batch_size}, {output_size}), "
                f"got {tuple(t.shape)}"
            )
        if xp.isdtype(t.dtype, "bool"):
            t = xp.astype(t, xp.int64)
        # exactly one 1 per row, zeros elsewhere: soft, empty or NaN rows are refused
        ones = xp.sum(xp.astype(t == 1, xp.int64), axis=1)
        zeros = xp.sum(xp.astype(t == 0, xp.int64), axis=1)
        if not bool(xp.all((ones == 1) & (zeros == output_size - 1))):
            raise ValueError(
                f"{name} (one-hot) must have exactly one 1 per row and zeros elsewhere; "
                "give integer labels for anything else"
            )
        return xp.argmax(t, axis=1)
    if t.ndim != 1:
        raise ValueError(
            f"{name} must be labels of shape ({batch_size},) or one-hot of shape "
            f"({batch_size}, {output_size}), got {tuple(t.shape)}"
        )
    if t.shape[0] != batch_size:
        raise ValueError(
            f"{name} has {t.shape[0]} labels but x has {batch_size} samples "
            "(batch sizes must match)"
        )
    if xp.isdtype(t.dtype, "real floating"):
        if not bool(xp.all(t == xp.round(t))):
            raise TypeError(f"{name} labels must be integers, got non-integral floats")
    elif not xp.isdtype(t.dtype, "integral"):
        raise TypeError(f"{name} labels must have an integer dtype, got {t.dtype}")
    labels = t if same_dtype(xp, t.dtype, xp.int64) else xp.astype(t, xp.int64)
    bounds = xp.stack([xp.min(labels), xp.max(labels)])
    low, high = (int(v) for v in to_numpy(bounds).tolist())
    if low < 0 or high >= output_size:
        raise ValueError(
            f"{name} labels must lie in [0, {output_size}), got values from {low} to {high}"
        )
    return labels


def check_step(h, name: str = "h") -> float:
    """A finite, positive step size."""
    return positive_float(name, h)
