from xpnet.bench import bench_methods, mnist_like_batch


def test_mnist_like_batch_has_realistic_zeros():
    x, t = mnist_like_batch(200, 784, seed=1)
    assert x.shape == (200, 784) and t.shape == (200,)
    assert 0.45 < float((x == 0).mean()) < 0.57
    assert (x[:, 0] == 0).all() and (x[:, 14 * 28 + 14] != 0).mean() > 0.9  # border vs centre


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
    assert by["loop"]["note"].startswith("the book's loop (plain NumPy, 1 BLAS thread)")
    assert by["structured"]["rel_vs_loop"] < 1e-7 and by["batched"]["rel_vs_loop"] < 1e-7
    assert 1e-9 < by["backprop"]["rel_vs_loop"] < 1e-4  # the book's +1e-7 term
    assert all(r["speedup"] > 0 for r in rows)


def test_helpers_are_ready_before_the_first_timed_method(monkeypatch):
    """On NumPy the timed rows are the default's (helper processes), not threads
    that stand in while the helpers start."""
    import xpnet.bench as module

    events = []
    monkeypatch.setattr(module, "host_threads", lambda: 3)
    monkeypatch.setattr(module.procs, "helpers", lambda n, wait=False: events.append((n, wait)))
    timed = module._timed
    monkeypatch.setattr(module, "_timed", lambda *a: events.append("timed") or timed(*a))
    bench_methods(sizes=(16, 4, 3), batch=6, repeats=1, loop_sample=4, methods=("structured",))
    assert events[:3] == [(2, False), (2, True), "timed"]
