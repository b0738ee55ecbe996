"""The heads against the losses they must equal: every shortcut a head offers
the structured gradient (moved score columns, series in a unit's change) is
compared with the head's own loss evaluated at the moved scores.

Tolerances: the shortcuts are exact identities (``exp(a + d) = exp(a) exp(d)``)
or series whose remainder is below rounding, so they agree with direct
evaluation to rounding of O(1) losses: 1e-12 relative on differences of
~1e-4 scaled back, i.e. loss differences agree to ~1e-15 absolute.
"""

import math

import numpy as np
import pytest

from xpnet import series
from xpnet.backend import to_numpy
from xpnet.heads import HEADS, get_head


class _Combine:
    """The central difference of two stacked perturbed losses, unscaled."""

    def __init__(self, xp):
        self.xp = xp

    def loss(self, moved):
        return moved[0, ...] - moved[1, ...] if hasattr(moved, "shape") else moved[0] - moved[1]

    def negative_log(self, q):  # stacked, or a list of the two steps'
        q_plus, q_minus = (q[0, ...], q[1, ...]) if hasattr(q, "shape") else q
        return self.xp.log(q_minus / q_plus)


def _case(backend, name, n=5, c=4, seed=0):
    rng = np.random.default_rng(seed)
    a = backend.from_host(rng.standard_normal((n, c)))
    if name == "softmax":
        t = backend.from_host(rng.integers(0, c, n), dtype=backend.xp.int64)
    elif name == "sigmoid":
        t = backend.from_host((rng.random((n, c)) < 0.5).astype(float))
    else:
        t = backend.from_host(rng.standard_normal((n, c)))
    return a, t


@pytest.mark.parametrize("name", sorted(HEADS))
def test_column_differences_are_the_losses_at_moved_columns(backend, name):
    xp = backend.xp
    head = get_head(name)
    a, t = _case(backend, name)
    n, c = a.shape
    steps = np.array([1e-3, -1e-3])
    inputs = np.random.default_rng(1).random((3, n))  # (I, N): how much each column moves
    delta = backend.from_host(steps[:, None, None] * inputs[None, :, :])  # (S, I, N)
    got = to_numpy(head.column_differences(head.cache(a, t), delta, _Combine(xp)))
    a_host = to_numpy(a)
    expected = np.zeros((3, c))
    for i in range(3):
        for k in range(c):
            moved = []
            for s in steps:
                shifted = np.array(a_host, copy=True)
                shifted[:, k] += s * inputs[i]
                moved.append(head.losses(backend.from_host(shifted), t))
            expected[i, k] = float(to_numpy(xp.sum(moved[0] - moved[1])))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_series_in_a_units_change_equals_the_losses(backend, name):
    """Scores moving linearly, ``a + dz * V[j]``: the head's series evaluated at
    ``dz`` equals its loss at the moved scores."""
    xp = backend.xp
    head = get_head(name)
    a, t = _case(backend, name, n=3, c=4)
    rng = np.random.default_rng(2)
    V = rng.standard_normal((2, 4))  # (J, C): shared by the samples
    dz = np.array([[2e-4, -3e-4], [1e-4, 5e-5], [-2e-4, 1e-4]])  # (N, J)
    dz_steps = backend.from_host(np.stack([dz, -0.5 * dz]))  # (S, N, J)
    terms = series.terms_for_linear(3e-4 * float(np.ptp(V)), np.finfo(float).eps)
    cache = head.cache(a, t)
    stacked = head.series_coefficients(cache, slice(0, 3), [None, backend.from_host(V)], terms)
    coefficients = list(xp.unstack(stacked))  # (R, N, J): R rows, each gathered per item

    def per_sample(array):
        return array[:, None, ...]

    got = to_numpy(head.series_differences(cache, coefficients, dz_steps, per_sample, _Combine(xp)))
    a_host = to_numpy(a)
    for n in range(3):
        for j in range(2):
            losses = []
            for step in (dz[n, j], -0.5 * dz[n, j]):
                moved = a_host[n : n + 1] + step * V[j][None, :]
                loss = head.losses(backend.from_host(moved), t[n : n + 1, ...])
                losses.append(float(to_numpy(loss)[0]))
            assert math.isclose(
                float(got[n, j]), losses[0] - losses[1], rel_tol=1e-9, abs_tol=1e-15
            ), (n, j)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_series_at_both_signs_equals_the_two_steps(backend, name):
    """``both_signs``: the first step's change alone, the second's its negative,
    gives the differences of the two steps given apart (to rounding)."""
    xp = backend.xp
    head = get_head(name)
    a, t = _case(backend, name, n=3, c=4)
    V = backend.from_host(np.random.default_rng(5).standard_normal((2, 4)))  # (J, C)
    dz = np.random.default_rng(6).uniform(-3e-4, 3e-4, (1, 3, 2))  # (1, N, J)
    cache = head.cache(a, t)
    rows = list(xp.unstack(head.series_coefficients(cache, None, [None, V], 4)))
    per_sample = lambda array: array[:, None, ...]  # noqa: E731 (items: all (n, j))
    combine = _Combine(xp)
    apart = head.series_differences(
        cache, rows, backend.from_host(np.concatenate([dz, -dz])), per_sample, combine
    )
    both = head.series_differences(
        cache, rows, backend.from_host(dz[0]), per_sample, combine, both_signs=True
    )
    # the differences are ~1e-4 of losses ~1: rounding ~eps relative to the losses
    np.testing.assert_allclose(to_numpy(both), to_numpy(apart), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("general", [False, True], ids=["linear", "general"])
def test_a_series_in_a_scaled_variable_is_the_same_series(backend, name, general):
    """``scale`` gives the series in ``r``, ``dz = scale * r``: evaluated at ``r``
    it equals the series in ``dz`` evaluated at ``scale * r`` (the linear
    shortcut and the term-by-term path alike)."""
    xp = backend.xp
    head = get_head(name)
    a, t = _case(backend, name, n=3, c=4)
    rng = np.random.default_rng(4)
    V = backend.from_host(rng.standard_normal((2, 4)))  # (J, C)
    scale = rng.uniform(0.05, 0.25, (3, 2))  # (N, J): a sigmoid's slopes
    r = rng.uniform(-1e-3, 1e-3, (2, 3, 2))  # (S, N, J)
    moves = [None, V, None] if general else [None, V]
    cache = head.cache(a, t)

    def differences(coefficients, at):
        rows = list(xp.unstack(coefficients))
        per_sample = lambda array: array[:, None, ...]  # noqa: E731 (items: all (n, j))
        return to_numpy(
            head.series_differences(cache, rows, backend.from_host(at), per_sample, _Combine(xp))
        )

    in_dz = head.series_coefficients(cache, None, moves, 4)
    in_r = head.series_coefficients(cache, None, moves, 4, backend.from_host(scale))
    assert in_r.shape == in_dz.shape
    expected = differences(in_dz, scale[None, ...] * r)
    np.testing.assert_allclose(differences(in_r, r), expected, rtol=1e-9, atol=1e-18)


def test_unknown_head_is_one_clear_error():
    with pytest.raises(ValueError, match="output='tanh' is not known"):
        get_head("tanh")


@pytest.mark.parametrize(
    "name, t, error, words",
    [
        ("softmax", np.array([0, 7]), ValueError, "label"),
        ("sigmoid", np.array([[0.5, 1.0], [0.0, 1.0]]), ValueError, "only 0 and 1"),
        ("identity", np.array([[0, 1], [1, 0]]), TypeError, "float targets"),
        ("identity", np.array([[np.nan, 1.0], [1.0, 0.0]]), ValueError, "NaN or inf"),
    ],
)
def test_targets_that_do_not_fit_a_head(backend, name, t, error, words):
    with pytest.raises(error, match=words):
        get_head(name).targets(backend.from_host(t), 2, 2, backend.dtype)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_a_linear_move_gives_the_coefficients_of_the_general_series(backend, name):
    """A linear score change ``[None, V]`` takes a shortcut (all powers at once);
    given as a general series ``[None, V, 0]`` it takes the term-by-term path:
    the coefficients agree to rounding, for all samples (None) or a slice."""
    head = get_head(name)
    a, t = _case(backend, name, n=3, c=4)
    V = backend.from_host(np.random.default_rng(3).standard_normal((3, 2, 4)))  # per sample
    cache = head.cache(a, t)
    for rows in (None, slice(1, 3)):
        moved = V if rows is None else V[rows, ...]  # moves come for the rows asked
        shortcut = head.series_coefficients(cache, rows, [None, moved], 5)
        general = head.series_coefficients(cache, rows, [None, moved, None, None, None], 5)
        assert shortcut.shape == general.shape
        assert shortcut.shape[1:3] == ((3 if rows is None else 2), 2)
        np.testing.assert_allclose(to_numpy(shortcut), to_numpy(general), rtol=1e-13, atol=0)
