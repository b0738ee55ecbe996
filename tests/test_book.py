"""The book's loop, the baseline of every speed ratio: it is the book's numerical
gradient (checked against xpnet's loop here, on a small net), and its
extrapolated time scales with the number of parameters."""

import sys

import numpy as np
import pytest
from conftest import make_batch, make_net

import xpnet
from xpnet import book


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_the_books_loop_is_the_numerical_gradient(activation):
    net = make_net(xpnet.resolve_backend("numpy"), (6, 4, 3), activation=activation)
    x, t = make_batch(5, 6, 3, seed=2)
    params = {k: np.array(v) for k, v in net.params.items()}
    got = book.BookNet(params, activation).numerical_gradient(x, t)
    expected = net.numerical_gradient(x, t, method="loop")
    for name in expected:
        # both evaluate the same central differences; rounding of the two forward
        # passes differs by ~eps, divided by 2h: ~1e-12 absolute
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-10)


def test_the_books_loop_with_decay_and_depth():
    net = xpnet.MultiLayerNet(5, [4, 3], 3, "relu", 0.5, 0.1, seed=1)
    x, t = make_batch(4, 5, 3, seed=3)
    params = {k: np.array(v) for k, v in net.params.items()}
    got = book.BookNet(params, "relu", 0.1).numerical_gradient(x, t)
    expected = net.numerical_gradient(x, t, method="loop")
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-10)


def test_the_loop_restores_every_weight_bit_for_bit():
    params = {k: np.array(v) for k, v in xpnet.TwoLayerNet(6, 4, 3, 0.5, seed=0).params.items()}
    before = {k: v.copy() for k, v in params.items()}
    x, t = make_batch(3, 6, 3)
    book.BookNet(params).numerical_gradient(x, t)
    for name in before:
        assert np.array_equal(params[name], before[name])


def test_extrapolation_scales_with_the_parameters(monkeypatch):
    x, t = make_batch(5, 10, 3)
    small = {k: np.array(v) for k, v in xpnet.TwoLayerNet(10, 4, 3, seed=0).params.items()}
    big = {k: np.array(v) for k, v in xpnet.TwoLayerNet(10, 8, 3, seed=0).params.items()}
    seconds, timed = book.loop_seconds(small, "sigmoid", x, t, sample=6)
    assert seconds > 0 and timed == 6
    # with a clock that says one second passed, the estimate is exactly
    # (all parameters) / (timed coordinates) seconds
    ticks = iter([0.0, 1.0, 10.0, 11.0])
    monkeypatch.setattr(sys.modules["xpnet.book"].time, "perf_counter", lambda: next(ticks))
    seconds, timed = book.loop_seconds(small, "sigmoid", x, t, sample=6)
    assert seconds == pytest.approx((10 * 4 + 4 + 4 * 3 + 3) / 6)
    seconds, timed = book.loop_seconds(big, "sigmoid", x, t, sample=6)
    assert seconds == pytest.approx((10 * 8 + 8 + 8 * 3 + 3) / 6)
