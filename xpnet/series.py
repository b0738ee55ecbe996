"""Truncated power series in one small variable, and when they are exact.

Rules of this module:

* A series is a list ``[c_0, c_1, ..., c_{K-1}]`` of arrays that broadcast
  together: the value at ``t`` is ``sum_m c_m t^m``. Arithmetic on series
  (:func:`multiply`, :func:`compose`, :func:`exp`) yields the exact first ``K``
  Taylor coefficients of the result, in real arithmetic, given exact ones of the
  operands: nothing is approximated until a series is *evaluated* at some ``t``
  (:func:`horner`), where the terms of degree ``K`` and above are left out.
* Leaving them out is allowed only where it changes the value by less than the
  rounding of evaluating it. :func:`terms_for_linear` and :func:`terms_for_cauchy`
  give the smallest ``K`` that makes the left-out remainder provably smaller than
  ``eps / 16`` of the quantity's scale (the arguments are in
  docs/numerical-gradient.md), or None where no ``K`` up to :data:`MAX_TERMS`
  does; the caller then evaluates the function directly.
* The namespace comes from the arrays; nothing here names an array library.
"""

from __future__ import annotations

import math

__all__ = [
    "MAX_TERMS",
    "horner",
    "multiply",
    "powers",
    "compose",
    "exp",
    "sigmoid_taylor",
    "terms_for_linear",
    "terms_for_cauchy",
    "terms_for_atanh",
]

#: Most terms a series may keep; a quantity that needs more is evaluated directly.
MAX_TERMS = 8

#: The left-out remainder must stay below this share of eps (of the quantity's scale).
_SHARE = 1.0 / 16.0


def horner(coefficients, t, *, both_signs: bool = False):
    """``sum_m c_m t^m`` by Horner's rule: one new array, the rest in place.

    ``None`` coefficients are zeros. ``t`` broadcasts against every coefficient;
    the result has their broadcast shape and the promoted dtype (complex ``t``:
    complex result).

    ``both_signs``: the list of the values at ``t`` and at ``-t``, as ``E(t^2)
    +- t O(t^2)`` (the even and odd parts, each by Horner's rule in ``t^2``):
    the same polynomial, in about half the operations on the broadcast shape
    (no array stacks them: a copy of both).
    """
    if both_signs:
        square = t * t
        even, odd = (
            horner(part, square) if any(c is not None for c in part) else None
            for part in (coefficients[0::2], coefficients[1::2])
        )
        if odd is None:
            return [even, even + 0 * t]
        odd = t * odd
        if even is None:
            return [odd, -odd]
        return [even + odd, even - odd]
    top = max(m for m, c in enumerate(coefficients) if c is not None)
    if top == 0:
        return coefficients[0] + 0 * t
    value = coefficients[top] * t
    for m in range(top - 1, 0, -1):
        if coefficients[m] is not None:
            value += coefficients[m]
        value *= t
    if coefficients[0] is not None:
        value += coefficients[0]
    return value


def multiply(a, b, terms: int):
    """The product of two series, truncated to ``terms`` coefficients. ``None``
    coefficients are zeros (skipped)."""
    out = []
    for m in range(terms):
        total = None
        for i in range(m + 1):
            if i >= len(a) or m - i >= len(b) or a[i] is None or b[m - i] is None:
                continue
            part = a[i] * b[m - i]
            total = part if total is None else total + part
        out.append(total)
    return out


def powers(x, terms: int):
    """``[x^1, x^2, ..., x^(terms-1)]`` of a series ``x`` with ``x_0 = 0`` (given
    as ``None``), each truncated to ``terms`` coefficients (``x^p`` has ``None``
    below degree ``p``)."""
    x = list(x[:terms]) + [None] * (terms - len(x))
    out = [x]
    for _ in range(2, terms):
        out.append(multiply(out[-1], x, terms))
    return out


def compose(f_taylor, x, terms: int):
    """``f(a + x(t)) - f(a)`` as a series, from ``f``'s Taylor coefficients at
    ``a`` (``f_taylor[p] = f^(p)(a) / p!``) and a series ``x`` with ``x_0 = 0``.

    The coefficients of ``f`` broadcast against those of ``x``. Returns a series
    whose constant term is ``None`` (zero)."""
    out = [None] * terms
    for p, xp_power in enumerate(powers(x, terms), 1):
        if p >= len(f_taylor):
            break
        for m in range(p, terms):
            if xp_power[m] is None:
                continue
            part = f_taylor[p] * xp_power[m]
            out[m] = part if out[m] is None else out[m] + part
    return out


def exp(g, terms: int):
    """``exp(g(t))`` as a series, for ``g`` with ``g_0 = 0`` (``None``).

    From ``E' = g' E``: ``m E_m = sum_{k=1}^{m} k g_k E_{m-k}``, ``E_0 = 1``.
    """
    e = [None] * terms
    for m in range(1, terms):
        total = None
        for k in range(1, m + 1):
            if k >= len(g) or g[k] is None:
                continue
            part = g[k] if m == k else g[k] * e[m - k]
            if k != 1:
                part = k * part
            total = part if total is None else total + part
        e[m] = None if total is None else total * (1.0 / m)
    return e


def sigmoid_taylor(s, terms: int):
    """Taylor coefficients ``sigma^(p)(a) / p!`` of the logistic function at ``a``,
    from ``s = sigma(a)``: ``sigma' = sigma - sigma^2`` gives ``(p + 1) s_{p+1} =
    s_p - sum_{q=0}^{p} s_q s_{p-q}``."""
    s_taylor = [s]
    for p in range(terms - 1):
        square = None
        for q in range(p + 1):
            part = s_taylor[q] * s_taylor[p - q]
            square = part if square is None else square + part
        s_taylor.append((s_taylor[p] - square) * (1.0 / (p + 1)))
    return s_taylor


def terms_for_linear(bound: float, eps: float, *, complex_step: bool = False) -> int | None:
    """Terms ``K`` of ``exp(u)`` for ``|u| <= bound``: the remainder
    ``bound^K / K! * e^bound`` is below ``eps / 16`` of ``e^-bound`` (the smallest
    value a sum of such exponentials with positive weights can take, relative to
    its weights), twice over for a ratio: ``e^(2 bound) bound^K / K! <= eps / 16``.

    With ``complex_step`` the quantity of interest is the imaginary part, of
    order ``bound``: the remainder is compared with ``bound`` times that scale.
    """
    if not math.isfinite(bound) or bound < 0 or bound >= 1.0:
        return None  # from 1 on no K <= MAX_TERMS is enough (and exp would overflow)
    if bound == 0:
        return 1
    for k in range(2, MAX_TERMS + 1):
        remainder = math.exp(2 * bound) * bound**k / math.factorial(k)
        scale = bound if complex_step else 1.0
        if remainder <= _SHARE * eps * scale:
            return k
    return None


def terms_for_cauchy(rho: float, eps: float, *, growth: float = 2.0, order: int = 0) -> int | None:
    """Terms ``K`` of a function analytic on the disk ``|t| <= R`` and bounded
    there by ``e^growth`` times its scale, evaluated at ``|t| <= rho R``:
    Cauchy's estimate bounds the coefficients by ``e^growth / R^m``, so the
    remainder is at most ``e^growth rho^K / (1 - rho)``; that, over
    ``e^(-growth rho)`` (how far the value can fall below its scale) and over
    ``rho^order`` (``order=1``: the quantity is a first-order change), must be
    below ``eps / 16``.
    """
    if not math.isfinite(rho) or rho < 0 or rho >= 0.5:
        return None
    if rho == 0:
        return 1 + order
    for k in range(max(2, order + 1), MAX_TERMS + 1):
        remainder = math.exp(growth * (1 + rho)) * rho ** (k - order) / (1 - rho)
        if remainder <= _SHARE * eps:
            return k
    return None


def terms_for_atanh(bound: float, eps: float) -> int | None:
    """Terms ``M`` of ``atanh(y) = sum_{k < M} y^(2k+1) / (2k+1)`` for ``|y| <=
    bound``: the left-out remainder is at most ``|y|^(2M+1) / ((2M+1)(1 - y^2))``
    and ``|atanh(y)| >= |y|``, so ``bound^(2M) / ((2M+1)(1 - bound^2)) <= eps /
    16`` leaves out less than rounding of the value. None: no ``M <=
    MAX_TERMS`` is enough."""
    if not math.isfinite(bound) or bound < 0 or bound >= 0.5:
        return None
    for m in range(1, MAX_TERMS + 1):
        if bound ** (2 * m) / ((2 * m + 1) * (1 - bound**2)) <= _SHARE * eps:
            return m
    return None
