"""Generic numerical gradients: the reference loop and batched perturbation.

Rules of this module:

* Both functions compute the same central differences
  ``(f(x + h e_k) - f(x - h e_k)) / 2h``; the perturbed inputs are bit-identical
  (``x + h * 1`` and ``x + h * 0 == x``), so the two differ only in how ``f``
  rounds.
* :func:`numerical_gradient` is the ground truth: one coordinate at a time, with
  the book's semantics (``x`` is perturbed in place and restored, so an ``f`` that
  ignores its argument still works). On immutable arrays (JAX) it passes a
  perturbed copy instead, and ``f`` must then use its argument.
* :func:`numerical_gradient_batched` never materialises the whole ``(P, *shape)``
  stack: it works in chunks sized from a byte budget (and the device's free memory
  where the backend reports it), and halves a chunk that runs out of memory.
"""

from __future__ import annotations

import itertools
import math
import warnings

import array_api_compat
import array_api_extra as xpx
from array_api_compat import array_namespace

from .checks import check_float_array, check_step, positive_int
from .device import free_memory, out_of_memory_errors
from .dtypes import DTYPES, dtype_info

__all__ = [
    "numerical_gradient",
    "numerical_gradient_batched",
    "default_step",
    "resolve_step",
    "check_step_range",
    "memory_budget",
    "itemsize",
    "DEFAULT_HOST_BYTES",
    "DEFAULT_DEVICE_BYTES",
]

#: Working-memory budget per chunk on host backends: a few cache-sized arrays.
DEFAULT_HOST_BYTES = 8 * 2**20
#: Working-memory budget per chunk on GPUs (further capped by free memory).
DEFAULT_DEVICE_BYTES = 2 * 2**30


def default_step(dtype, xp) -> float:
    """Default central-difference step for a floating dtype of ``xp``:
    :attr:`xpnet.dtypes.DType.central_step` (float64: the book's ``1e-4``;
    float32: ``4 * cbrt(eps) ~ 2e-2``)."""
    return dtype_info(xp, dtype).central_step


def resolve_step(h, dtype, xp, *, complex_step=False) -> float:
    """Validate ``h`` or pick the default for ``dtype``; warn on a float32 trap.

    ``h=None`` gives :func:`default_step` (or ``1e-20`` for the complex step).
    """
    info = dtype_info(xp, dtype)
    if h is None:
        return info.complex_step if complex_step else info.central_step
    h = check_step(h)
    if not complex_step and h < info.warn_below:
        warnings.warn(
            f"h={h:g} in {info.name}: rounding error (~eps/h = {info.eps / h:.0e}) swamps the "
            f"gradient; use the default h=None ({info.central_step:.2g}), "
            "float64, or method='complex'",
            UserWarning,
            stacklevel=_outside_xpnet(),
        )
    return h


def memory_budget(xp, device, max_bytes=None, *, host_default=DEFAULT_HOST_BYTES) -> int:
    """Bytes one chunk may use: ``max_bytes``, else ``host_default`` on host
    backends and :data:`DEFAULT_DEVICE_BYTES` on GPUs, capped at half the device's
    free memory where the backend reports it."""
    free = free_memory(xp, device)
    if max_bytes is None:
        max_bytes = host_default if free is None else DEFAULT_DEVICE_BYTES
    else:
        max_bytes = positive_int("max_bytes", max_bytes)
    if free is not None:
        max_bytes = min(max_bytes, free // 2)
    return max(int(max_bytes), 1)


def itemsize(xp, dtype) -> int:
    """Bytes per element of a floating or complex dtype of ``xp``."""
    info = dtype_info(xp, dtype)
    return info.itemsize if dtype == info.real(xp) else 2 * info.itemsize


def _scalar(value, xp, like):
    device = array_api_compat.device(like)
    if isinstance(value, (int, float)):  # a Python number: straight in x's dtype
        return xp.asarray(value, dtype=like.dtype, device=device)
    shape = getattr(value, "shape", None)
    if shape is None:
        raise TypeError(f"f must return a scalar (a float or a 0-d array), got {value!r}")
    if tuple(shape) not in ((), (1,)):
        raise ValueError(
            f"f must return a scalar (a float or a 0-d array), got an array of shape {tuple(shape)}"
        )
    value = xp.asarray(value, device=device)
    return xp.reshape(xp.astype(value, like.dtype), ())


def numerical_gradient(f, x, *, h=1e-4):
    """Central-difference gradient of ``f`` at ``x``, one coordinate at a time.

    The book's ``common/gradient.py``: for every index ``k`` of ``x``, set
    ``x[k] = x_k + h``, evaluate ``f(x)``, set ``x[k] = x_k - h``, evaluate, restore.

    Parameters
    ----------
    f : callable
        ``f(x) -> scalar`` (Python float or 0-d array).
    x : array, any shape, real floating
        Point of evaluation. Mutable arrays are perturbed in place and restored
        exactly; immutable ones (JAX) are not touched and ``f`` receives a
        perturbed copy.
    h : float
        Step (> 0).

    Returns
    -------
    array, same shape, dtype and device as ``x``.
    """
    h = check_step(h)
    check_float_array("x", x)
    xp = array_namespace(x)
    in_place = array_api_compat.is_writeable_array(x)
    values = []
    for index in itertools.product(*(range(n) for n in x.shape)):
        if in_place:
            original = xp.asarray(x[index], copy=True)  # torch indexing returns a view
            x[index] = original + h
            f_plus = f(x)
            x[index] = original - h
            f_minus = f(x)
            x[index] = original
        else:
            f_plus = f(xpx.at(x, index).add(h, copy=True))
            f_minus = f(xpx.at(x, index).subtract(h, copy=True))
        values.append((_scalar(f_plus, xp, x) - _scalar(f_minus, xp, x)) / (2 * h))
    return xp.reshape(xp.stack(values), x.shape)


def numerical_gradient_batched(
    f_batched, x, *, h=1e-4, chunk_size=None, max_bytes=None, item_bytes=None
):
    """Central-difference gradient, evaluating chunks of perturbations at once.

    For a chunk of ``K`` coordinates, builds the ``(2K, *x.shape)`` stack
    ``[x + h E; x - h E]`` (``E``: ``K`` rows of the identity, by broadcasting, no
    scatter) and calls ``f_batched`` once on it.

    Parameters
    ----------
    f_batched : callable
        Maps an array of shape ``(B, *x.shape)`` to the ``B`` values of ``f``
        (shape ``(B,)``).
    x : array, any shape, real floating
    h : float
        Step (> 0).
    chunk_size : int, optional
        Coordinates per chunk. Default: from ``max_bytes``.
    max_bytes : int, optional
        Memory budget per chunk; default 8 MiB on the host, 2 GiB on a GPU,
        capped at half its free memory.
    item_bytes : int, optional
        Bytes ``f_batched`` needs per stacked input beyond the input itself, so the
        budget covers its intermediates too (default: 0).

    Returns
    -------
    array, same shape, dtype and device as ``x``.

    Raises
    ------
    ValueError
        ``f_batched`` returned the wrong shape, or a bad ``chunk_size``/``h``.
    """
    h = check_step(h)
    check_float_array("x", x)
    xp = array_namespace(x)
    device = array_api_compat.device(x)
    size = math.prod(x.shape)
    if chunk_size is None:
        per_item = 2 * (size * itemsize(xp, x.dtype) * 2 + (item_bytes or 0))
        chunk_size = max(1, memory_budget(xp, device, max_bytes) // per_item)
    else:
        chunk_size = positive_int("chunk_size", chunk_size)
    flat = xp.reshape(x, (1, size))
    oom = out_of_memory_errors(xp)
    parts = []
    start = 0
    while start < size:
        k = min(chunk_size, size - start)
        try:
            parts.append(_batched_chunk(f_batched, xp, flat, x, start, k, h))
        except oom:
            if k == 1:
                raise
            chunk_size = k // 2  # the same chunk again, in halves
            continue
        start += k
    return xp.reshape(xp.concat(parts), x.shape)


def _batched_chunk(f_batched, xp, flat, x, start, k, h):
    """Central differences of coordinates ``start:start + k`` in one call."""
    basis = xp.eye(k, flat.shape[1], k=start, dtype=x.dtype, device=array_api_compat.device(x))
    stack = xp.concat([flat + h * basis, flat - h * basis], axis=0)
    values = f_batched(xp.reshape(stack, (2 * k, *x.shape)))
    if tuple(values.shape) != (2 * k,):
        raise ValueError(
            f"f_batched must return shape ({2 * k},) for a stack of {2 * k} inputs, "
            f"got {tuple(values.shape)}"
        )
    return (values[:k] - values[k:]) / (2 * h)


def check_step_range(h: float, dtype_name: str, *, complex_step: bool = False) -> None:
    """``h`` within the range where the dtype's central difference
    (:attr:`~xpnet.dtypes.DType.step_range`) or complex step
    (:attr:`~xpnet.dtypes.DType.complex_step_range`) can work."""
    if complex_step:
        _check_complex_step(h, dtype_name)
    else:
        _check_central_step(h, dtype_name)


def _check_central_step(h: float, dtype_name: str) -> None:
    """``h`` within the dtype's :attr:`~xpnet.dtypes.DType.step_range`."""
    low, high = DTYPES[dtype_name].step_range
    if not low <= h <= high:
        raise ValueError(
            f"h={h:g} cannot give a {dtype_name} central difference: use {low:g} <= h <= "
            f"{high:g} (default h=None), or method='complex' for tiny steps"
        )


def _check_complex_step(h: float, dtype_name: str) -> None:
    """``h`` of the complex step: tiny enough that the step's own curvature is
    below rounding, large enough that ``h`` times the derivative is not lost."""
    low, high = DTYPES[dtype_name].complex_step_range
    if not low <= h <= high:
        raise ValueError(
            f"h={h:g} cannot give a {dtype_name} complex step: use {low:g} <= h <= {high:g} "
            "(default h=None: 1e-20)"
        )


def _outside_xpnet() -> int:
    """The ``stacklevel`` of a warning that points at the first caller outside
    the package (the user's line, however deep the call came in)."""
    import inspect

    package = __name__.rsplit(".", 1)[0]
    here = inspect.currentframe()
    frame, level = (here.f_back if here else None), 1  # the caller of this function: level 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith(package + "."):
        frame, level = frame.f_back, level + 1
    return level
