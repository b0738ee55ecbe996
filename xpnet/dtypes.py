"""The floating dtypes xpnet computes in, and everything that depends on them.

Rules of this module: one record per supported dtype holds every dtype-dependent
number (item size, the complex type of the complex step, the default and the
allowed central-difference steps, the gradient check's tolerances); modules look
them up here instead of comparing dtypes themselves. It names no array library:
a namespace's dtypes are looked up by name (``getattr(xp, "float64")``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

__all__ = ["DType", "DTYPES", "dtype_info", "same_dtype"]


@dataclass(frozen=True)
class DType:
    """What xpnet needs to know about one real floating dtype.

    Attributes
    ----------
    name, complex_name : str
        ``"float64"`` / ``"complex128"``: the Array-API names of the real dtype and
        of the complex dtype the complex step computes in.
    itemsize : int
        Bytes per real element (a complex element takes twice as many).
    eps : float
        Machine epsilon.
    central_step : float
        Default ``h`` of central differences. float64: the book's ``1e-4`` (about
        ``16 * cbrt(eps)``; the step's scale comes from the loss's curvature, not
        from the parameters' size). float32: ``4 * cbrt(eps) ~ 2e-2``; smaller
        steps drown in rounding error.
    step_range : (float, float)
        Steps a network's central difference accepts: below the first ``w + h ==
        w`` for weights of order 1 and the gradient is rounding noise; above the
        second it measures no derivative (and the perturbed scores' ``exp``
        overflows in some methods, not in others).
    warn_below : float
        A smaller explicit step gets a warning (rounding error ``eps / h``).
    complex_step : float
        Default ``h`` of the complex step (no cancellation: any tiny step).
    complex_step_range : (float, float)
        Steps the complex step accepts: above the second, the step's own
        curvature (``~h^2``, relative) is no longer below rounding; below the
        first, ``h`` times a derivative leaves the dtype's normal range.
    tolerance, complex_tolerance : float
        Default normwise bound of :func:`xpnet.gradient_check` for central
        differences and for the complex step.
    """

    name: str
    complex_name: str
    itemsize: int
    eps: float
    central_step: float
    step_range: tuple
    warn_below: float
    complex_step: float
    complex_step_range: tuple
    tolerance: float
    complex_tolerance: float

    def real(self, xp):
        """This dtype in namespace ``xp``."""
        return getattr(xp, self.name)

    def complex(self, xp):
        """The complex dtype of the complex step in namespace ``xp`` (None where
        the namespace has none)."""
        return getattr(xp, self.complex_name, None)


DTYPES = {
    "float64": DType(
        name="float64",
        complex_name="complex128",
        itemsize=8,
        eps=2.0**-52,
        central_step=1e-4,
        step_range=(1e-12, 1.0),
        warn_below=0.0,
        complex_step=1e-20,
        complex_step_range=(1e-290, 1e-8),
        tolerance=1e-5,
        complex_tolerance=1e-5,
    ),
    "float32": DType(
        name="float32",
        complex_name="complex64",
        itemsize=4,
        eps=2.0**-23,
        central_step=4 * (2.0**-23) ** (1 / 3),
        step_range=(1e-5, 1.0),
        warn_below=1e-3,
        complex_step=1e-20,
        complex_step_range=(1e-30, 1e-4),
        tolerance=5e-2,
        complex_tolerance=1e-4,
    ),
}


def dtype_info(xp, dtype) -> DType:
    """The record of ``dtype`` (a real or complex dtype of namespace ``xp``).

    Raises
    ------
    TypeError
        Where ``dtype`` is not one of :data:`DTYPES` or their complex types.
    """
    try:
        return _dtype_info(xp, dtype)
    except TypeError:  # an unhashable dtype: look through the records
        for info in DTYPES.values():
            if same_dtype(xp, dtype, info.real(xp)) or same_dtype(xp, dtype, info.complex(xp)):
                return info
    raise TypeError(f"expected a dtype of {sorted(DTYPES)} or its complex type, got {dtype}")


@functools.lru_cache(maxsize=64)
def _dtype_info(xp, dtype) -> DType:
    """:func:`dtype_info` of hashable dtypes, remembered (dtype comparisons are
    not free on every backend)."""
    for info in DTYPES.values():
        if dtype == info.real(xp) or dtype == info.complex(xp):
            return info
    raise TypeError(f"expected a dtype of {sorted(DTYPES)} or its complex type, got {dtype}")


def same_dtype(xp, a, b) -> bool:
    """Whether ``a`` is the dtype ``b`` of namespace ``xp`` (``b`` None: no).

    By identity first (a namespace's dtypes are often singletons), else with the
    Array API's own predicate ``xp.isdtype(a, b)``: a read of metadata, where
    ``==`` on some namespaces' dtypes is Python code run per call."""
    return b is not None and (a is b or xp.isdtype(a, b))
