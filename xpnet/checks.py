"""Argument checks that turn bad input into clear errors.

Rules of this module:

* Every check names the argument and says what was expected, and raises
  ``TypeError`` for a wrong kind of thing (dtype, type) and ``ValueError`` for a
  wrong value (shape, range, NaN).
* Checks run on the backend that holds the data (one reduction, one scalar back to
  the host); they never convert a device array with NumPy.
"""

from __future__ import annotations

import math
import numbers

from array_api_compat import array_namespace

__all__ = ["check_size", "check_inputs", "check_targets", "check_step", "check_float_array"]


def check_size(name: str, value) -> int:
    """A positive integer layer size."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


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
    labels = xp.astype(t, xp.int64)
    low, high = int(xp.min(labels)), int(xp.max(labels))
    if low < 0 or high >= output_size:
        raise ValueError(
            f"{name} labels must lie in [0, {output_size}), got values from {low} to {high}"
        )
    return labels


def check_step(h, name: str = "h") -> float:
    """A finite, positive step size."""
    if isinstance(h, bool) or not isinstance(h, numbers.Real):
        raise TypeError(f"{name} must be a positive float, got {type(h).__name__}")
    h = float(h)
    if not (h > 0 and math.isfinite(h)):
        raise ValueError(f"{name} must be a positive finite float, got {h}")
    return h
