import warnings

import numpy as np
import pytest

from xpnet import functions as F
from xpnet.backend import to_numpy


def _host(backend, a):
    return backend.from_host(np.asarray(a, dtype=np.float64))


def test_sigmoid_matches_book_formula(backend):
    x = np.linspace(-30, 30, 121)
    got = to_numpy(F.sigmoid(_host(backend, x)))
    # the book's formula, evaluated the same way: equal to a couple of ulps
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-x)), rtol=1e-15, atol=0)


def test_sigmoid_extremes_no_overflow_warning(backend):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = to_numpy(F.sigmoid(_host(backend, [-1000.0, -700.0, 0.0, 1000.0])))
    # clipped at -700: sigmoid(-1000) is 1e-304 instead of 0, an absolute error
    # far below anything float64 can add to it
    np.testing.assert_array_equal(got[2:], [0.5, 1.0])
    assert 0.0 <= got[0] <= 1e-300 and got[0] == got[1]


def test_sigmoid_real_and_complex_forms_agree(xp, backend):
    x = np.linspace(-40, 40, 81)
    real = to_numpy(F.sigmoid(_host(backend, x)))
    as_complex = to_numpy(xp.real(F.sigmoid(xp.astype(_host(backend, x), xp.complex128))))
    np.testing.assert_allclose(real, as_complex, rtol=0, atol=5e-16)


def test_sigmoid_grad_and_complex_step_agree(xp, backend):
    x = np.linspace(-5, 5, 11)
    grad = to_numpy(F.sigmoid_grad(_host(backend, x)))
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(grad, s * (1 - s), rtol=1e-13)
    z = backend.from_host(x + 1e-20j, dtype=xp.complex128)
    np.testing.assert_allclose(to_numpy(xp.imag(F.sigmoid(z))) / 1e-20, s * (1 - s), rtol=1e-13)


def test_relu_and_grad(backend):
    x = _host(backend, [-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(to_numpy(F.relu(x)), [0.0, 0.0, 3.0])
    np.testing.assert_array_equal(to_numpy(F.relu_grad(x)), [0.0, 0.0, 1.0])


def test_softmax_rows_and_shift(backend):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 6)) * 10
    y = to_numpy(F.softmax(_host(backend, a)))
    e = np.exp(a - a.max(1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-14)
    huge = to_numpy(F.softmax(_host(backend, a + 1e5)))  # would overflow unshifted
    np.testing.assert_allclose(huge, y, rtol=1e-9)
    one = to_numpy(F.softmax(_host(backend, a[0])))
    np.testing.assert_allclose(one, y[0], rtol=1e-14)


def test_cross_entropy_matches_book(backend, xp):
    rng = np.random.default_rng(1)
    y = rng.random((5, 4))
    y /= y.sum(1, keepdims=True)
    t = np.array([0, 3, 1, 1, 2])
    expect = -np.sum(np.log(y[np.arange(5), t] + 1e-7)) / 5
    labels = backend.from_host(t, dtype=xp.int64)
    onehot = backend.from_host(np.eye(4)[t])
    got_labels = float(F.cross_entropy_error(_host(backend, y), labels))
    got_onehot = float(F.cross_entropy_error(_host(backend, y), onehot))
    assert got_labels == pytest.approx(expect, rel=1e-14)
    assert got_onehot == pytest.approx(expect, rel=1e-14)
    per_sample = to_numpy(F.cross_entropy_error(_host(backend, y), labels, reduce=False))
    np.testing.assert_allclose(per_sample, -np.log(y[np.arange(5), t] + 1e-7), rtol=1e-14)


def test_cross_entropy_single_sample_and_stacks(backend, xp):
    y = np.array([0.1, 0.7, 0.2])
    got = float(F.cross_entropy_error(_host(backend, y), backend.from_host(np.array([0, 1, 0]))))
    assert got == pytest.approx(-np.log(0.7 + 1e-7), rel=1e-14)
    stack = np.stack([np.tile(y, (2, 1)), np.tile(y[::-1], (2, 1))])  # (2, N=2, C=3)
    labels = backend.from_host(np.array([1, 1]), dtype=xp.int64)
    got = to_numpy(F.cross_entropy_error(_host(backend, stack), labels))
    np.testing.assert_allclose(got, [-np.log(0.7 + 1e-7), -np.log(0.7 + 1e-7)], rtol=1e-14)


@pytest.mark.parametrize("name", ["sigmoid", "relu"])
def test_activation_registry_derivatives_are_the_functions_slopes(backend, xp, name):
    activation = F.ACTIVATIONS[name]
    a = _host(backend, np.linspace(-3, 3, 13) + 0.05)  # off ReLU's kink
    z = activation.function(a)
    slope = (activation.function(a + 1e-6) - activation.function(a - 1e-6)) / 2e-6
    np.testing.assert_allclose(
        to_numpy(activation.derivative(a, z)), to_numpy(slope), rtol=1e-8, atol=1e-10
    )
    assert repr(activation) == f"Activation({name!r})"
