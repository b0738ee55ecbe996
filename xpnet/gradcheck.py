"""Gradient check: numerical gradient against backprop, per parameter.

Rules of this module:

* The error measures are the book's chapter 5 one (mean absolute difference) plus
  the max absolute difference and the normwise relative error
  ``||n - b|| / max(||n||, ||b||)``, computed on the backend.
* The default tolerance accounts for the book's loss: backprop ignores the
  ``+1e-7`` inside the log, which alone makes the two gradients differ by about
  1e-6 relative; float32 central differences are good to about 1e-3.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["gradient_check", "GradientCheck", "default_tolerance"]


def default_tolerance(net, method="auto") -> float:
    """Normwise relative tolerance for ``method`` at the network's dtype."""
    if net.backend.dtype_name == "float64":
        return 1e-5
    return 1e-4 if method == "complex" else 5e-2


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
    net, x, t, *, method="auto", h=None, tolerance=None, verbose=True
) -> GradientCheck:
    """Compare ``net.numerical_gradient`` with ``net.gradient`` on ``(x, t)``.

    Parameters
    ----------
    net : TwoLayerNet
    x, t : arrays
        A batch (keep it small for ``method="loop"``).
    method, h
        Passed to :meth:`TwoLayerNet.numerical_gradient`.
    tolerance : float, optional
        Pass bound on the normwise relative error; default from
        :func:`default_tolerance`.
    verbose : bool
        Print the table.

    Returns
    -------
    GradientCheck
    """
    xp = net.xp
    numeric = net.numerical_gradient(x, t, method=method, h=h)
    analytic = net.gradient(x, t)
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
        rows, default_tolerance(net, method) if tolerance is None else float(tolerance), method
    )
    if verbose:
        print(result)
    return result
