import pytest
from conftest import make_batch, make_net

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
