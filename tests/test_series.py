"""Truncated power series against closed forms, and the term counts' bounds.

Coefficients are checked against exact Taylor coefficients derived here (the
exponential's ``g^m / m!``, the logistic's from its derivatives); evaluation
against the function itself, where the left-out remainder is bounded.
"""

import math

import numpy as np
import pytest

from xpnet import series


def test_exp_of_a_linear_series_has_the_exponentials_coefficients():
    g = np.array([0.3, -1.2, 2.0])
    e = series.exp([None, g], 6)
    assert e[0] is None
    for m in range(1, 6):
        np.testing.assert_allclose(e[m], g**m / math.factorial(m), rtol=1e-15)


def test_exp_of_a_quadratic_series_matches_the_function():
    g1, g2 = np.array([0.5, -0.25]), np.array([0.125, 0.75])
    coefficients = series.exp([None, g1, g2], 8)
    t = 1e-3
    value = 1.0 + series.horner([None, *coefficients[1:]], t)
    # remainder of degree 8 at t = 1e-3: far below rounding
    np.testing.assert_allclose(value, np.exp(g1 * t + g2 * t**2), rtol=1e-15)


def test_sigmoid_taylor_matches_the_derivatives():
    a = np.array([-2.0, 0.0, 0.7])
    s = 1 / (1 + np.exp(-a))
    taylor = series.sigmoid_taylor(s, 4)
    d1 = s * (1 - s)
    d2 = d1 * (1 - 2 * s)
    d3 = d1 * (1 - 6 * s + 6 * s**2)
    for got, want in zip(taylor, (s, d1, d2 / 2, d3 / 6), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-16)


def test_compose_is_the_function_of_the_series():
    """sigmoid(a + x(t)) - sigmoid(a) for x(t) = 0.8 t - 0.3 t^2, at small t."""
    a = np.array([0.4, -1.5])
    s = 1 / (1 + np.exp(-a))
    x = [None, np.array([0.8, 0.8]), np.array([-0.3, -0.3])]
    change = series.compose(series.sigmoid_taylor(s, 8), x, 8)
    t = 1e-3
    moved = a + 0.8 * t - 0.3 * t**2
    want = 1 / (1 + np.exp(-moved)) - s
    np.testing.assert_allclose(series.horner(change, t), want, rtol=1e-12)


def test_multiply_and_powers_truncate():
    a = [np.array(1.0), np.array(2.0)]
    b = [np.array(3.0), None, np.array(5.0)]
    product = series.multiply(a, b, 3)  # (1 + 2t)(3 + 5t^2) = 3 + 6t + 5t^2 + ...
    assert [float(c) for c in product] == [3.0, 6.0, 5.0]
    p = series.powers([None, np.array(2.0)], 4)  # (2t)^1, (2t)^2, (2t)^3
    assert float(p[2][3]) == 8.0 and p[2][2] is None


def test_horner_with_complex_t_gives_the_complex_value():
    c = [np.array(1.0), np.array(2.0), None, np.array(4.0)]
    t = 1e-3j
    assert series.horner(c, t) == 1 + 2 * t + 4 * t**3


@pytest.mark.parametrize("bound", [1e-6, 1e-4, 1e-3, 1e-2])
def test_terms_for_linear_leave_out_less_than_the_rounding(bound):
    eps = np.finfo(float).eps
    k = series.terms_for_linear(bound, eps)
    assert k is not None and 2 <= k <= series.MAX_TERMS
    # the left-out tail of exp(u) for |u| <= bound, against the smallest value
    tail = sum(bound**m / math.factorial(m) for m in range(k, 40))
    assert tail * math.exp(bound) <= eps / 16
    if k > 2:  # the smallest such K: one term fewer is not enough by the bound
        assert math.exp(2 * bound) * bound ** (k - 1) / math.factorial(k - 1) > eps / 16


def test_no_term_count_where_the_series_cannot_be_proven_exact():
    eps = np.finfo(float).eps
    assert series.terms_for_linear(5.0, eps) is None
    assert series.terms_for_linear(1e300, eps) is None  # no overflow: huge weights
    assert series.terms_for_linear(float("nan"), eps) is None
    assert series.terms_for_cauchy(0.5, eps) is None
    assert series.terms_for_cauchy(0.4, eps, growth=2.0) is None  # needs > 8 terms
    assert series.terms_for_cauchy(0.0, eps, order=1) == 2
    k = series.terms_for_cauchy(1e-3, eps, growth=2.0)
    assert k is not None and math.exp(2 * 1.001) * 1e-3**k / (1 - 1e-3) <= eps / 16


@pytest.mark.parametrize(
    "present",
    [(0, 1, 2, 3), (0, 1, 2, 3, 4), (1, 2, 3), (0, 2), (1, 3), (1,), (0,)],
    ids=["cubic", "quartic", "no-constant", "even", "odd", "linear", "constant"],
)
def test_horner_at_both_signs_is_the_polynomial_at_t_and_minus_t(present):
    """``both_signs``: ``E(t^2) +- t O(t^2)`` stacked, equal to Horner's rule at
    ``t`` and at ``-t`` to rounding, whichever coefficients are None."""
    rng = np.random.default_rng(7)
    coefficients = [None] * (max(present) + 1)
    for m in present:
        coefficients[m] = rng.standard_normal((3, 4))  # per item
    t = rng.uniform(-0.5, 0.5, (1, 3, 1))  # per pair, broadcast over the units
    both = series.horner(coefficients, t, both_signs=True)
    assert [value.shape for value in both] == [(1, 3, 4)] * 2
    for k, sign in enumerate((1.0, -1.0)):
        want = sum(c * (sign * t[0]) ** m for m, c in enumerate(coefficients) if c is not None)
        np.testing.assert_allclose(
            both[k][0], np.broadcast_to(want, (3, 4)), rtol=1e-14, atol=1e-15
        )


def test_atanh_terms_leave_out_less_than_rounding():
    """``terms_for_atanh``: the least ``M`` whose left-out terms are below ``eps
    / 16`` of ``atanh(y)`` for every ``|y| <= bound`` (checked at the bound, the
    worst case, in extended precision), ``M - 1`` not enough; None where no
    ``M <= MAX_TERMS`` is."""
    eps = float(np.finfo(np.float64).eps)
    for bound in (1e-9, 1.2e-6, 3.3e-5, 2.4e-4, 4.8e-4, 1e-2, 0.1):
        m = series.terms_for_atanh(bound, eps)
        y = np.longdouble(bound)
        exact = np.arctanh(y)

        def partial(terms, y=y):
            return sum(y ** (2 * k + 1) / (2 * k + 1) for k in range(terms))

        assert abs(exact - partial(m)) / exact <= eps / 16, bound
        if m > 1:
            assert abs(exact - partial(m - 1)) / exact > eps / 16 / 3, bound  # not much smaller
    assert series.terms_for_atanh(0.5, eps) is None
    assert series.terms_for_atanh(float("nan"), eps) is None
    assert series.terms_for_atanh(0.3, eps) is None  # would need more than MAX_TERMS
