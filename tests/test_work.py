"""How a structured gradient's work is run (xpnet.work): tasks on the kept
helper threads, in order, with the calling thread working too."""

import dataclasses
import threading

import numpy as np
import pytest
from array_api_compat import array_namespace
from conftest import make_batch

import xpnet
import xpnet.work
from xpnet.work import make_context


@pytest.fixture
def fresh_pool(monkeypatch):
    """A pool of helper threads of this test's own (shut down after it)."""
    pool = xpnet.work._Pool()
    monkeypatch.setattr(xpnet.work, "_POOL", pool)
    yield pool
    if pool.pool is not None:
        pool.pool.shutdown(wait=True)


def _context(n_threads):
    net = xpnet.TwoLayerNet(6, 4, 3, 0.5, seed=0)
    x, _ = make_batch(5, 6, 3, seed=0)
    return make_context(np, net.spec, np.asarray(x), 1e-4, "central", 2**20, n_threads)


def test_tasks_run_on_the_calling_thread_and_the_kept_helpers_in_order(fresh_pool):
    ctx = _context(3)
    seen = []
    gate = threading.Barrier(3, timeout=10)  # all three threads at once, or it raises

    def task(k):
        gate.wait()
        seen.append((k, threading.current_thread().name))
        return k * k

    assert ctx.run([lambda k=k: task(k) for k in range(3)]) == [0, 1, 4]
    # the first task (a plan's largest: the others start later) is the caller's
    assert (0, threading.current_thread().name) in seen
    assert sum(name.startswith("xpnet") for _, name in seen) == 2
    first = fresh_pool.pool
    # the next call reuses the same helpers; a smaller one too
    assert ctx.run([lambda k=k: k for k in range(5)]) == list(range(5))
    assert _context(2).run([lambda: 1, lambda: 2]) == [1, 2]
    assert fresh_pool.pool is first and fresh_pool.size == 2


def test_more_threads_grow_the_pool():
    pool = xpnet.work._Pool()
    assert [f.result(timeout=10) for f in pool.submit(lambda: 6, 1)] == [6]
    small = pool.pool
    futures = pool.submit(lambda: 7, 3)
    large = pool.pool
    assert large is not small and pool.size == 3
    with pytest.raises(RuntimeError):  # the smaller pool was shut down
        small.submit(lambda: 0)
    # submit() takes the pool under its lock: it never meets a shut-down one
    futures += pool.submit(lambda: 8, 2) + pool.submit(lambda: 9, 4)
    assert [f.result(timeout=10) for f in futures] == [7] * 3 + [8] * 2 + [9] * 4
    assert pool.size == 4 and pool.pool is not large
    pool.pool.shutdown(wait=True)
    large.shutdown(wait=True)


def test_a_run_inside_a_helper_that_finds_every_helper_busy_does_not_wait(fresh_pool):
    """One helper, busy running a task that runs tasks itself: the inner run's
    caller does them all and does not wait for the helper it could not get."""
    ctx = _context(2)
    done = []

    def outer(k):
        return sum(ctx.run([lambda m=m: m + k for m in range(4)]))

    def main():
        done.append(ctx.run([lambda k=k: outer(k) for k in range(2)]))

    runner = threading.Thread(target=main, daemon=True)
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive(), "nested runs waited for each other"
    assert done == [[6, 10]]


def test_a_forked_child_starts_without_the_parents_helpers():
    pool = xpnet.work._Pool()
    pool.submit(lambda: None, 2)
    parent = pool.pool
    pool.forked()
    assert pool.pool is None and pool.size == 0
    pool.submit(lambda: None, 1)
    assert pool.pool is not parent and pool.size == 1
    parent.shutdown(wait=True)
    pool.pool.shutdown(wait=True)


def test_an_error_in_a_task_reaches_the_caller(fresh_pool):
    ctx = _context(2)

    def bad():
        raise ValueError("task failed")

    with pytest.raises(ValueError, match="task failed"):
        ctx.run([lambda: 1, bad, lambda: 3])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mode", ["central", "complex"])
def test_a_context_sent_to_a_helper_comes_back_equal(dtype, mode):
    """A helper rebuilds the context from plain values: the same fields, the
    steps to the bit, NumPy's namespace, dtypes and errors."""
    import pickle

    net = xpnet.MultiLayerNet(6, [4], 3, "sigmoid", output="identity", seed=0, dtype=dtype)
    x, _ = make_batch(5, 6, 3, seed=0)
    x = np.asarray(x, dtype=dtype)
    ctx = make_context(array_namespace(x), net.spec, x, 1e-3, mode, 2**20, 2)
    back = pickle.loads(pickle.dumps(ctx, protocol=5))
    for field in dataclasses.fields(ctx):
        mine, theirs = getattr(ctx, field.name), getattr(back, field.name)
        if field.name == "steps":
            assert theirs.dtype == mine.dtype and theirs.shape == mine.shape
            np.testing.assert_array_equal(theirs, mine)
        elif field.name == "xp":
            assert theirs is mine  # array_api_compat's NumPy namespace
        else:
            assert theirs == mine and type(theirs) is type(mine), field.name


@pytest.mark.parametrize("log_terms", [2, 3])
@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "listed"])
def test_negative_log_by_its_series_is_the_log_of_the_ratio(log_terms, stacked):
    """With ``log_terms`` a central difference's ``log(q- / q+)`` is ``2
    atanh(y)`` by its series: equal to the log of the ratio wherever ``|y|``
    lies within the bound its terms were chosen for (here the largest of
    :func:`xpnet.series.terms_for_atanh`'s for that count), as the two steps
    stacked or as a list."""
    from xpnet import series

    eps = float(np.finfo(np.float64).eps)
    bound = max(
        b for b in np.geomspace(1e-9, 0.4, 400) if series.terms_for_atanh(b, eps) == log_terms
    )
    net = xpnet.TwoLayerNet(6, 4, 3, seed=0)
    x, _ = make_batch(5, 6, 3, seed=0)
    ctx = dataclasses.replace(
        make_context(array_namespace(x), net.spec, x, 1e-4, "central", 2**20, 1),
        log_terms=log_terms,
    )
    rng = np.random.default_rng(3)
    q_plus = rng.uniform(1e-7, 1.0, 2000)
    y = rng.uniform(-bound, bound, 2000)
    q_minus = q_plus * (1 + y) / (1 - y)  # (q- - q+) / (q- + q+) = y
    q = np.stack([q_plus, q_minus]) if stacked else [q_plus, q_minus]
    got = ctx.negative_log(q)
    # log(q- / q+) of these very q, in extended precision (x86: 64-bit mantissa)
    wide = [np.asarray(v, dtype=np.longdouble) for v in (q_plus, q_minus)]
    want = 2 * np.arctanh((wide[1] - wide[0]) / (wide[1] + wide[0]))
    # relative to the result: the series leaves out less than eps / 16; y and
    # Horner's rule round a few times (q- - q+ is exact)
    np.testing.assert_allclose(got, want.astype(np.float64), rtol=8 * eps, atol=0)
    # the log of the rounded ratio, the path without log_terms, is no closer
    plain = np.log(q_minus / q_plus)
    assert np.max(np.abs(got - want) / np.abs(want)) <= np.max(np.abs(plain - want) / np.abs(want))


def test_results_are_added_in_the_order_given():
    """Floating-point addition is not associative: 1 + 1e16 rounds to 1e16, so
    left to right gives 0 where any other order gives 1."""
    parts = [[np.array([1.0]), None], [np.array([1e16]), None], [np.array([-1e16]), None]]
    total = xpnet.work.added_in_order(iter(parts))
    assert total[0][0] == 0.0 and total[1] is None
    assert xpnet.work.added_in_order(iter(parts[1:] + parts[:1]))[0][0] == 1.0
    assert xpnet.work.added_in_order(iter([])) is None


@pytest.mark.parametrize("n_threads", [1, 3])
def test_pieces_are_joined_in_order_and_a_piece_out_of_memory_in_halves(
    backend, n_threads, fresh_pool
):
    """The pieces' rows joined in the order of the bounds, on every backend and
    thread count; a piece that runs out of memory is computed as its halves."""
    xp = backend.xp
    net = xpnet.TwoLayerNet(6, 4, 3, 0.5, seed=0, backend=backend.name, device=backend.device)
    x = backend.asarray(make_batch(5, 6, 3, seed=0)[0])
    ctx = make_context(xp, net.spec, x, 1e-4, "central", 2**20, n_threads)
    table = np.arange(40.0).reshape(20, 2)
    calls = []

    def compute(lo, hi):
        calls.append((lo, hi))
        if (lo, hi) == (6, 13):  # a middle piece that does not fit
            raise MemoryError
        return backend.asarray(table[lo:hi] * 2.0)

    bounds = [(0, 6), (6, 13), (13, 14), (14, 20)]
    joined = ctx.in_pieces(bounds, compute)
    assert tuple(joined.shape) == (20, 2)
    np.testing.assert_array_equal(xpnet.backend.to_numpy(joined), table * 2.0)
    assert {(6, 9), (9, 13)} <= set(calls)  # the halves of the failing piece
    single = ctx.in_pieces([(3, 8)], compute)
    np.testing.assert_array_equal(xpnet.backend.to_numpy(single), table[3:8] * 2.0)
