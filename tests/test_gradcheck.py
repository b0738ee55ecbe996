import numpy as np
import pytest
from conftest import make_batch, make_multi, make_net, make_targets

import xpnet


@pytest.mark.parametrize("method", ["structured", "complex", "loop"])
def test_gradient_check_passes_and_prints(backend, method, capsys):
    net = make_net(backend, (8, 5, 3))
    x, t = make_batch(6, 8, 3)
    result = xpnet.gradient_check(net, x, t, method=method)
    assert result.passed
    out = capsys.readouterr().out
    for name in ("W1", "b1", "W2", "b2", "PASSED", "rel error"):
        assert name in out
    # the +1e-7 term: numerical and backprop differ, but by ~1e-6, not 0 and not 1e-3
    assert all(1e-9 < row["rel"] < 1e-5 for row in result.rows.values())
    assert "passed=True" in repr(result)


def test_gradient_check_catches_a_wrong_backprop(backend, capsys):
    net = make_net(backend, (8, 5, 3))
    x, t = make_batch(6, 8, 3)
    right = net.gradient

    def wrong(x, t):
        grads = right(x, t)
        grads["b1"] = grads["b1"] * 1.01  # a 1% bug
        return grads

    net.gradient = wrong
    result = xpnet.gradient_check(net, x, t, verbose=False)
    assert not result.passed
    assert result.rows["b1"]["rel"] == pytest.approx(0.01 / 1.01, rel=1e-3)
    assert "FAILED" in str(result)
    assert capsys.readouterr().out == ""


def test_float32_tolerance_is_looser():
    net = xpnet.TwoLayerNet(8, 5, 3, 0.5, dtype="float32", seed=0)
    x, t = make_batch(6, 8, 3)
    result = xpnet.gradient_check(net, x, t, verbose=False)
    assert result.tolerance == 5e-2 and result.passed


def test_gradient_check_any_depth_and_head(backend):
    for output in ("softmax", "sigmoid", "identity"):
        net = make_multi(backend, (6, 5, 4, 2), output=output, decay=0.1)
        x, _ = make_batch(5, 6, 2)
        result = xpnet.gradient_check(net, x, make_targets(output, 5, 2), verbose=False)
        assert result.passed, (output, result)
        assert list(result.rows) == list(net.params)


@pytest.mark.parametrize("wrong_array", ["W1", "b1", "W2", "b2", "W3", "b3"])
def test_directions_catch_a_one_percent_error_in_any_single_array(backend, wrong_array):
    net = make_multi(backend, (12, 8, 6, 3), decay=0.01)
    x, _ = make_batch(10, 12, 3)
    t = make_targets("softmax", 10, 3)
    good = xpnet.gradient_check(net, x, t, directions=3, verbose=False)
    assert good.passed and good.method == "3 directions"
    assert all(row["rel"] < 1e-5 for row in good.rows.values())
    right = net.gradient
    rng = np.random.default_rng(1)

    def wrong(x, t):
        grads = right(x, t)
        g = grads[wrong_array]
        # a 1% error of random direction (not a mere rescaling)
        noise = net.backend.from_host(rng.standard_normal(tuple(g.shape)))
        grads[wrong_array] = g + 0.01 * noise * (
            net.xp.linalg.vector_norm(g) / net.xp.linalg.vector_norm(noise)
        )
        return grads

    net.gradient = wrong
    bad = xpnet.gradient_check(net, x, t, directions=3, verbose=False)
    assert not bad.passed
    assert [name for name, row in bad.rows.items() if row["rel"] > bad.tolerance] == [wrong_array]


def test_directions_catch_a_two_fold_error_in_W1_of_the_book_net():
    """torch's fast_mode passed this (one projection of all parameters)."""
    net = xpnet.TwoLayerNet(784, 50, 10, seed=0)
    x, t = make_batch(20, 784, 10, seed=4)
    right = net.gradient

    def wrong(x, t):
        grads = right(x, t)
        grads["W1"] = 2.0 * grads["W1"]
        return grads

    net.gradient = wrong
    result = xpnet.gradient_check(net, x, t, directions=2, verbose=False)
    assert result.rows["W1"]["rel"] > 0.3 and not result.passed
    assert all(result.rows[k]["rel"] < 1e-5 for k in ("b1", "W2", "b2"))


def test_bad_directions():
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    x, t = make_batch(3, 4, 2)
    with pytest.raises(ValueError, match="directions must be a positive int"):
        xpnet.gradient_check(net, x, t, directions=0)
    with pytest.raises(TypeError, match="directions must be a positive int"):
        xpnet.gradient_check(net, x, t, directions=1.5)
    with pytest.raises(ValueError, match="method='loop' applies only"):
        xpnet.gradient_check(net, x, t, directions=2, method="loop")


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), -1.0, 0.0])
def test_a_tolerance_that_cannot_judge_is_refused(tolerance):
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    with pytest.raises(ValueError, match="tolerance must be a positive finite float"):
        xpnet.gradient_check(net, np.ones((2, 4)), np.array([0, 1]), tolerance=tolerance)
