import numpy as np
import pytest

import xpnet
from xpnet.device import track_peak_memory
from xpnet.timing import bench_methods, loop_seconds, machine_info, mnist_like_batch, time_call


def test_time_call_statistics(backend):
    calls = []
    stats = time_call(
        lambda: calls.append(1), xp=backend.xp, device=backend.device, warmup=2, repeats=4
    )
    assert len(calls) == 6 and len(stats["times_s"]) == 4
    assert stats["min_s"] <= stats["median_s"] <= stats["max_s"]


def test_time_call_measures_memory_of_first_call():
    stats = time_call(lambda: np.ones(1_000_000), repeats=1, memory=True)
    assert stats["peak_bytes"] >= 8_000_000 and stats["peak_how"] == "tracemalloc"
    assert stats["result"].shape == (1_000_000,)


def test_peak_memory_on_strict_device1():
    b = xpnet.resolve_backend("array_api_strict", device="device1")
    result, peak, how = track_peak_memory(
        b.xp, b.device, lambda: b.xp.ones(500_000, device=b.device)
    )
    assert peak >= 4_000_000 and result.device == b.device


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
    import sys

    ticks = iter([0.0, 1.0, 10.0, 11.0])
    monkeypatch.setattr(sys.modules["xpnet.timing"].time, "perf_counter", lambda: next(ticks))
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


def test_machine_info():
    info = machine_info([("numpy", None)])
    assert info["cpu"] and info["cpu_count"] >= 1 and "numpy" in info["versions"]
    assert info["devices"] == {"numpy:default": "cpu"}


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_available_backends_includes_host(name):
    assert (name, None) in xpnet.timing.available_backends(("numpy", "array_api_strict"))
