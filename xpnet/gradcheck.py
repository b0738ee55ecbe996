"""Gradient check: numerical gradient against backprop, per parameter.

Rules of this module:

* The error measures are the book's chapter 5 one (mean absolute difference) plus
  the max absolute difference and the normwise relative error
  ``||n - b|| / max(||n||, ||b||)``, computed on the backend.
* The default tolerance accounts for the book's loss: backprop ignores the
  ``+1e-7`` inside the log, which alone makes the two gradients differ by about
  1e-6 relative; float32 central differences are good to about 1e-3.
* ``directions=k`` checks each parameter array on its own, along ``k`` random unit
  directions ``v`` (drawn on the host from ``seed``): the central difference
  ``(L(p + h v) - L(p - h v)) / 2h`` against backprop's ``g . v``. The errors are
  measured over the ``k`` values of one array, so a wrong array is seen however
  small its gradient is next to the others' (one projection of the whole
  parameter vector, as ``torch.autograd.gradcheck``'s fast mode does, is
  dominated by the largest arrays).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np  # host: random directions

from . import checks, model
from .device import computing_on
from .dtypes import DTYPES
from .gradient import resolve_step

__all__ = ["gradient_check", "GradientCheck", "default_tolerance"]


def default_tolerance(net, method="auto") -> float:
    """Normwise relative tolerance for ``method`` at the network's dtype."""
    info = DTYPES[net.backend.dtype_name]
    return info.complex_tolerance if method == "complex" else info.tolerance


@dataclass(frozen=True)
class GradientCheck:
    """Result of :func:`gradient_check`: one row per parameter.

    Attributes
    ----------
    rows : dict
        ``name -> {"mean_abs": float, "max_abs": float, "rel": float}``.
    tolerance : float
        Bound on ``rel`` for :attr:`passed`.
    method : str
    """

    rows: dict
    tolerance: float
    method: str

    @property
    def passed(self) -> bool:
        return all(row["rel"] <= self.tolerance for row in self.rows.values())

    def __str__(self) -> str:
        lines = [
            f"gradient check ({self.method} numerical vs backprop, tolerance {self.tolerance:.0e})",
            f"{'param':<6} {'mean |diff|':>12} {'max |diff|':>12} {'rel error':>12}  ok",
        ]
        for name, row in self.rows.items():
            ok = "yes" if row["rel"] <= self.tolerance else "NO"
            numbers = f"{row['mean_abs']:>12.3e} {row['max_abs']:>12.3e} {row['rel']:>12.3e}"
            lines.append(f"{name:<6} {numbers}  {ok}")
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)

    def __repr__(self) -> str:
        worst = max(row["rel"] for row in self.rows.values())
        return f"GradientCheck(method={self.method!r}, worst_rel={worst:.3e}, passed={self.passed})"


def gradient_check(
    net, x, t, *, method="auto", h=None, tolerance=None, verbose=True, directions=None, seed=0
) -> GradientCheck:
    """Compare the numerical gradient with ``net.gradient`` on ``(x, t)``.

    Parameters
    ----------
    net : MultiLayerNet or TwoLayerNet
    x, t : arrays
        A batch (keep it small for ``method="loop"``).
    method, h
        Passed to :meth:`MultiLayerNet.numerical_gradient`.
    tolerance : float, optional
        Pass bound on the normwise relative error; default from
        :func:`default_tolerance`.
    verbose : bool
        Print the table.
    directions : int, optional
        Check ``k`` random unit directions per parameter array (central
        differences of the loss, ``2k`` loss evaluations per array) instead of the
        whole numerical gradient: milliseconds for any network. ``method`` must
        then be ``"auto"``.
    seed : int
        Seed of the host RNG that draws the directions.

    Returns
    -------
    GradientCheck
    """
    with computing_on(net.backend):
        return _check(net, x, t, method, h, tolerance, verbose, directions, seed)


def _check(net, x, t, method, h, tolerance, verbose, directions, seed):
    xp = net.xp
    if tolerance is not None:
        tolerance = checks.positive_float("tolerance", tolerance)
    analytic = net.gradient(x, t)
    if directions is None:
        numeric = net.numerical_gradient(x, t, method=method, h=h)
        label = method
    else:
        directions = checks.positive_int("directions", directions)
        if method != "auto":
            raise ValueError(
                f"directions= uses central differences of the loss; method={method!r} "
                "applies only to the full numerical gradient (directions=None)"
            )
        numeric, analytic = _projections(net, x, t, analytic, int(directions), h, seed)
        label = f"{int(directions)} directions"
    rows = {}
    for name in numeric:
        diff = numeric[name] - analytic[name]
        scale = max(
            float(xp.linalg.vector_norm(numeric[name])),
            float(xp.linalg.vector_norm(analytic[name])),
        )
        rows[name] = {
            "mean_abs": float(xp.mean(xp.abs(diff))),
            "max_abs": float(xp.max(xp.abs(diff))),
            "rel": float(xp.linalg.vector_norm(diff)) / scale if scale > 0 else 0.0,
        }
    result = GradientCheck(
        rows, default_tolerance(net, method) if tolerance is None else float(tolerance), label
    )
    if verbose:
        print(result)
    return result


def _projections(net, x, t, analytic, k, h, seed):
    """Directional derivatives, numerical and backprop, ``k`` per parameter array."""
    xp = net.xp
    h = resolve_step(h, net.dtype, xp)
    batch = net.batch(x, t)
    params = model.params_of(net.checked_layers())
    rng = np.random.default_rng(seed)  # host
    checks.fits_in_memory("directions", 16 * k * max(math.prod(v.shape) for v in params.values()))
    numeric, projected = {}, {}
    for name, value in params.items():
        v = rng.standard_normal((k, *value.shape))  # host
        v /= np.linalg.norm(v.reshape(k, -1), axis=1).reshape(k, *([1] * value.ndim))  # host
        v = net.backend.from_host(v, dtype=net.dtype)
        values = []
        for i in range(k):
            plus = dict(params, **{name: value + h * v[i, ...]})
            minus = dict(params, **{name: value - h * v[i, ...]})
            up = model.loss(net.spec, model.layers_of(plus), batch)
            down = model.loss(net.spec, model.layers_of(minus), batch)
            values.append((up - down) / (2 * h))
        numeric[name] = xp.stack(values)
        projected[name] = xp.sum(xp.reshape(v * analytic[name][None, ...], (k, -1)), axis=1)
    return numeric, projected
