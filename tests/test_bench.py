import sys

import pytest

import xpnet
from xpnet.bench import bench_methods, loop_seconds, mnist_like_batch


def test_mnist_like_batch_has_realistic_zeros():
    x, t = mnist_like_batch(200, 784, seed=1)
    assert x.shape == (200, 784) and t.shape == (200,)
    assert 0.45 < float((x == 0).mean()) < 0.57
    assert (x[:, 0] == 0).all() and (x[:, 14 * 28 + 14] != 0).mean() > 0.9  # border vs centre


def test_loop_extrapolation_is_positive_and_scales(backend, monkeypatch):
    net = xpnet.TwoLayerNet(10, 4, 3, backend=backend.name, device=backend.device, seed=0)
    x, labels = net._batch(*mnist_like_batch(5, 10, 3))
    seconds, timed = loop_seconds(net, x, labels, sample=6)
    assert seconds > 0 and timed >= 6
    # with a clock that says one second passed, the estimate is exactly
    # (all parameters) / (timed coordinates) seconds: it scales with the net
    ticks = iter([0.0, 1.0, 10.0, 11.0])
    monkeypatch.setattr(sys.modules["xpnet.bench"].time, "perf_counter", lambda: next(ticks))
    seconds, timed = loop_seconds(net, x, labels, sample=6)
    assert seconds == pytest.approx((10 * 4 + 4 + 4 * 3 + 3) / timed)
    big = xpnet.TwoLayerNet(10, 8, 3, backend=backend.name, device=backend.device, seed=0)
    big_seconds, big_timed = loop_seconds(big, *big._batch(*mnist_like_batch(5, 10, 3)), 6)
    assert big_seconds == pytest.approx((10 * 8 + 8 + 8 * 3 + 3) / big_timed)


def test_bench_methods_rows(backend):
    rows = bench_methods(
        backend=backend.name,
        device=backend.device,
        sizes=(16, 4, 3),
        batch=6,
        repeats=1,
        loop_sample=4,
    )
    methods = [r["method"] for r in rows]
    assert methods == ["loop", "structured", "complex", "batched", "backprop"]
    by = {r["method"]: r for r in rows}
    assert by["loop"]["note"].startswith("extrapolated")
    assert by["structured"]["rel_vs_loop"] < 1e-7 and by["batched"]["rel_vs_loop"] < 1e-7
    assert 1e-9 < by["backprop"]["rel_vs_loop"] < 1e-4  # the book's +1e-7 term
    assert all(r["speedup"] > 0 for r in rows)
