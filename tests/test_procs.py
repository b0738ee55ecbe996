"""Helper processes (xpnet.procs): NumPy host work only, so no backend fixture."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import xpnet
from xpnet import checks, functions, procs, shm

pytestmark = pytest.mark.skipif(
    not (hasattr(os, "memfd_create") and os.sys.platform == "linux"),
    reason="helper processes need Linux (memfd_create)",
)


@pytest.fixture
def pool(monkeypatch):
    """A pool of this test's own, stopped after it."""
    monkeypatch.delenv(procs.PARALLEL_VARIABLE, raising=False)
    fresh = procs._Pool()
    monkeypatch.setattr(procs, "_POOL", fresh)
    yield fresh
    fresh.stop()


@pytest.fixture
def planned_blocks(monkeypatch):
    """The sample blocks of every structured gradient from here on (the list
    grows per gradient), planned even for a tiny net; its one block shared by
    two processes (xpnet.shared_block, tests/test_shared_block.py) turned off."""
    import xpnet.structured as structured

    monkeypatch.setattr(structured, "_THREAD_SHARE_BYTES", 0)
    monkeypatch.setattr(structured.shared_block, "suits", lambda *a: False)
    blocks, real_blocks = [], structured.budget.gradient_blocks
    monkeypatch.setattr(
        structured.budget,
        "gradient_blocks",
        lambda *a: blocks.append(real_blocks(*a)) or blocks[-1],
    )
    return blocks


def test_results_come_back_in_order_from_another_process(pool):
    assert procs.helpers(2, wait=True) == 2
    pids = {h.process.pid for h in pool.helpers}
    assert os.getpid() not in pids and len(pids) == 2
    parts = [(np.linspace(-k, k, 1000 + k).reshape(-1, 1),) for k in range(5)]
    got = list(procs.run(functions.sigmoid, (), parts, 2))
    for (x,), result in zip(parts, got, strict=True):
        assert result.shape == x.shape
        np.testing.assert_array_equal(result, functions.sigmoid(x))
    # copied out of the shared memory: the next call cannot change them
    again = list(procs.run(functions.sigmoid, (), [(-x,) for (x,) in parts], 2))
    np.testing.assert_array_equal(got[3], functions.sigmoid(parts[3][0]))
    np.testing.assert_array_equal(again[3], functions.sigmoid(-parts[3][0]))


def test_views_are_the_helpers_memory_until_the_next_result(pool):
    """``views=True``: a helper's result is read where it lies (no copy), right
    for a caller that reads each before asking for the next; the next round's
    hand-off writes over it (what the copies of the default are for)."""
    assert procs.helpers(1, wait=True) == 1
    parts = [(np.linspace(-k, k, 500).reshape(-1, 1),) for k in range(1, 5)]
    read, held = [], []
    for k, result in enumerate(procs.run(functions.sigmoid, (), parts, 1, views=True)):
        read.append(np.array(result))  # read at once
        held.append(result)
        np.testing.assert_array_equal(result, functions.sigmoid(parts[k][0]))
    assert held[0].flags.owndata  # the first of a round is this process's own
    assert not held[1].flags.owndata  # a view of the memory
    # parts 1 and 3 went to the helper in rounds 1 and 2, through the same memory
    np.testing.assert_array_equal(held[1], held[3])
    assert not np.array_equal(read[1], read[3])


def test_arrays_larger_than_the_first_memory_grow_it(pool):
    assert procs.helpers(1, wait=True) == 1
    rows = 3 * shm.FIRST_BYTES // (8 * 4)  # 3 MiB of float64 (rows, 4)
    rng = np.random.default_rng(0)
    y = functions.softmax(rng.standard_normal((rows, 4)))
    labels = [(rng.integers(0, 4, rows),) for _ in range(2)]
    got = list(procs.run(functions.cross_entropy_error, (y,), labels, 1))
    for (t,), loss in zip(labels, got, strict=True):
        assert float(loss) == float(functions.cross_entropy_error(y, t))
    assert pool.shared.size >= y.nbytes > shm.FIRST_BYTES


def test_a_helper_keeps_the_common_arguments_but_takes_their_new_values(pool):
    assert procs.helpers(1, wait=True) == 1
    rng = np.random.default_rng(1)
    labels = [(rng.integers(0, 4, 50),) for _ in range(2)]
    for _ in range(3):  # the same shapes each call: the helper keeps what it unpickled
        y = functions.softmax(rng.standard_normal((50, 4)))
        got = list(procs.run(functions.cross_entropy_error, (y,), labels, 1))
        assert float(got[1]) == float(functions.cross_entropy_error(y, labels[1][0]))


def _add_first(array, value):  # not of xpnet: refused
    return array + value


def test_only_functions_of_xpnet_are_sent(pool):
    with pytest.raises(ValueError, match="module-level function of xpnet"):
        list(procs.run(_add_first, (np.ones(3),), [(1.0,), (2.0,)], 1))


def test_a_part_that_fails_in_a_helper_is_computed_here_and_raises(pool):
    assert procs.helpers(1, wait=True) == 1
    first = pool.helpers[0]
    with pytest.raises(ValueError, match="n must be a positive int"):
        list(procs.run(checks.positive_int, ("n",), [(3,), (-1,)], 1))
    assert not first.alive and first.process.poll() is not None
    # a new helper replaces it
    assert procs.helpers(1, wait=True) == 1
    assert list(procs.run(checks.positive_int, ("n",), [(3,), (4,)], 1)) == [3, 4]


def test_an_error_here_leaves_the_helpers_ready_for_the_next_call(pool):
    assert procs.helpers(1, wait=True) == 1
    helper = pool.helpers[0]
    with pytest.raises(ValueError, match="n must be a positive int"):
        list(procs.run(checks.positive_int, ("n",), [(-1,), (4,)], 1))
    # the helper's reply (4) was read and dropped, not left for this call
    assert helper.alive
    assert list(procs.run(checks.positive_int, ("n",), [(5,), (6,)], 1)) == [5, 6]


def test_a_helper_that_died_is_replaced_and_its_part_computed_here(pool):
    assert procs.helpers(1, wait=True) == 1
    dead = pool.helpers[0]
    dead.process.kill()
    dead.process.wait()
    assert list(procs.run(checks.positive_int, ("n",), [(3,), (4,), (5,)], 1)) == [3, 4, 5]
    assert not dead.alive
    assert procs.helpers(1, wait=True) == 1 and pool.helpers[0] is not dead


def test_an_interrupted_call_drops_the_busy_helpers(pool, monkeypatch):
    assert procs.helpers(1, wait=True) == 1
    busy = pool.helpers[0]

    def interrupted(name, value):  # stands in for positive_int here, not in the helper
        raise KeyboardInterrupt

    monkeypatch.setattr(interrupted, "__module__", "xpnet.checks")
    monkeypatch.setattr(interrupted, "__qualname__", "positive_int")
    with pytest.raises(KeyboardInterrupt):
        list(procs.run(interrupted, ("n",), [(3,), (4,)], 1))
    # its reply would have been read by the next call: it is gone
    assert not busy.alive and busy.process.poll() is not None


def test_threads_setting_and_a_second_caller_get_no_helpers(pool, monkeypatch):
    monkeypatch.setenv(procs.PARALLEL_VARIABLE, "threads")
    assert procs.helpers(2, wait=True) == 0 and pool.helpers == []
    monkeypatch.setenv(procs.PARALLEL_VARIABLE, "processes")
    assert procs.helpers(1, wait=True) == 1
    with pool.lock:  # another caller's: everything computed here, nothing waits
        assert procs.helpers(1) == 0
        assert list(procs.run(checks.positive_int, ("n",), [(3,), (4,)], 1)) == [3, 4]
    assert procs.helpers(1) == 1


def test_helpers_that_cannot_start_leave_the_work_here(pool, monkeypatch):
    monkeypatch.setattr(procs.sys, "executable", "/bin/false")  # ends before it is ready
    for _ in range(procs._MAX_FAILURES):
        assert procs.helpers(1, wait=True) == 0
    assert pool.failures == procs._MAX_FAILURES and pool.helpers == []
    assert procs.helpers(1, wait=True) == 0 and pool.helpers == []  # none started again
    assert list(procs.run(checks.positive_int, ("n",), [(3,), (4,)], 1)) == [3, 4]


def test_no_interpreter_to_run_means_no_helpers(pool, monkeypatch):
    monkeypatch.setattr(procs.sys, "executable", "/nonexistent/python")
    assert procs.helpers(1, wait=True) == 0 and pool.failures == procs._MAX_FAILURES
    assert list(procs.run(checks.positive_int, ("n",), [(3,), (4,)], 1)) == [3, 4]


def test_a_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv(procs.PARALLEL_VARIABLE, "fork")
    with pytest.raises(ValueError, match=r"\$XPNET_PARALLEL must be 'processes' or 'threads'"):
        procs.helpers(1)


def test_helpers_stop_when_their_pipe_closes(pool):
    assert procs.helpers(1, wait=True) == 1
    helper = pool.helpers[0]
    helper.writer.close()
    assert helper.process.wait(timeout=10) == 0


def test_the_gradient_in_helpers_equals_the_one_on_threads(pool, monkeypatch):
    """Same blocks, same arithmetic: bit for bit, central and complex."""
    import xpnet.structured as structured

    monkeypatch.setattr(structured, "_THREAD_SHARE_BYTES", 0)  # blocks even for a tiny net
    net = xpnet.MultiLayerNet(20, [6, 5], 3, "sigmoid", seed=0)
    rng = np.random.default_rng(1)
    x, t = rng.random((11, 20)), rng.integers(0, 3, 11)
    assert procs.helpers(2, wait=True) == 2
    seen = []
    real_run = procs.run
    monkeypatch.setattr(procs, "run", lambda *a, **k: seen.append(len(a[2])) or real_run(*a, **k))
    for method, h in (("structured", 1e-4), ("complex", 1e-20)):
        in_helpers = net.numerical_gradient(x, t, method=method, h=h, n_threads=3)
        monkeypatch.setenv(procs.PARALLEL_VARIABLE, "threads")
        on_threads = net.numerical_gradient(x, t, method=method, h=h, n_threads=3)
        monkeypatch.delenv(procs.PARALLEL_VARIABLE)
        for name in in_helpers:
            np.testing.assert_array_equal(in_helpers[name], on_threads[name])
    assert seen == [3, 3]  # three blocks, two of them in helpers, each time


def test_the_callers_larger_block_changes_the_gradient_only_by_rounding(
    pool, planned_blocks, monkeypatch
):
    """On two cores the caller's block leads the helper's by the hand-off (here
    capped at a quarter of a share: 22 or 23 samples of 40 against 20 without);
    the gradient equals the one-thread gradient to rounding (blocks evaluate
    the forward pass on fewer rows: ~1e-10 relative, as in
    tests/test_structured.py) and the book's loop to the loop's own accuracy."""
    import xpnet.structured as structured

    net = xpnet.MultiLayerNet(20, [6], 3, "sigmoid", seed=0)
    rng = np.random.default_rng(3)
    x, t = rng.random((40, 20)), rng.integers(0, 3, 40)
    blocks = planned_blocks
    assert procs.helpers(2, wait=True) == 2
    led = net.numerical_gradient(x, t, n_threads=2)
    assert blocks[-1] in ([(0, 22), (22, 40)], [(0, 23), (23, 40)])
    # with two helpers the caller hands out both runs before its own: no lead
    net.numerical_gradient(x, t, n_threads=3)
    assert len(blocks[-1]) == 3 and {b - a for a, b in blocks[-1]} <= {13, 14}
    monkeypatch.setattr(structured, "_HANDOFF_BYTES", 0)
    even = net.numerical_gradient(x, t, n_threads=2)
    assert blocks[-1] == [(0, 20), (20, 40)]
    one = net.numerical_gradient(x, t, n_threads=1)
    loop = net.numerical_gradient(x, t, method="loop")
    for name in one:
        scale = np.max(np.abs(one[name]))
        assert np.max(np.abs(led[name] - one[name])) <= 1e-9 * scale
        assert np.max(np.abs(even[name] - one[name])) <= 1e-9 * scale
        assert np.linalg.norm(led[name] - loop[name]) <= 1e-8 * np.linalg.norm(loop[name])


def test_more_blocks_than_cores_go_out_as_one_run_per_core(pool, planned_blocks, monkeypatch):
    """Blocks that a small memory budget makes: each core takes a run of them
    (one part per helper, no round trip per block), the same bits as on
    threads, and the one-thread gradient to rounding (blocks evaluate the
    forward pass on fewer rows: each loss difference moves by ~eps * L, the
    gradient by ~1e-10 relative, as in tests/test_structured.py). A run whose
    inputs would not fit the budget is cut into shorter runs."""
    net = xpnet.MultiLayerNet(20, [6], 3, "sigmoid", seed=0)
    rng = np.random.default_rng(2)
    x, t = rng.random((12, 20)), rng.integers(0, 3, 12)
    blocks, parts, real_run = planned_blocks, [], procs.run
    monkeypatch.setattr(procs, "run", lambda *a, **k: parts.append(a[2]) or real_run(*a, **k))
    assert procs.helpers(1, wait=True) == 1
    # a block's share of the budget (a core's half of it, less a chunk, which takes
    # at most half of that): 1,000 bytes, under one sample's estimate (a block per
    # sample) but room for six samples' inputs (160 bytes each)
    budget = 2 * (1000 + 1000)
    in_helpers = net.numerical_gradient(x, t, n_threads=2, max_bytes=budget)
    assert len(blocks[-1]) == 12 and len(parts[-1]) == 2  # a block per sample, two runs
    assert [part[-1] for part in parts[-1]] == [[(k, k + 1) for k in range(6)]] * 2
    tight = net.numerical_gradient(x, t, n_threads=2, max_bytes=1)
    assert len(blocks[-1]) == 12 and len(parts[-1]) == 12  # no room: a run per block
    monkeypatch.setenv(procs.PARALLEL_VARIABLE, "threads")
    on_threads = net.numerical_gradient(x, t, n_threads=2, max_bytes=budget)
    one = net.numerical_gradient(x, t, n_threads=1)
    for name in in_helpers:
        np.testing.assert_array_equal(in_helpers[name], on_threads[name])
        scale = np.max(np.abs(one[name]))
        assert np.max(np.abs(in_helpers[name] - one[name])) <= 1e-9 * scale
        assert np.max(np.abs(tight[name] - one[name])) <= 1e-9 * scale


def test_stop_ends_every_helper_and_the_next_call_starts_them_again(pool):
    assert procs.helpers(2, wait=True) == 2
    processes = [helper.process for helper in pool.helpers]
    procs.stop()
    assert pool.helpers == [] and all(p.poll() is not None for p in processes)
    assert procs.helpers(1, wait=True) == 1
    assert list(procs.run(checks.positive_int, ("n",), [(3,), (4,)], 1)) == [3, 4]


def test_a_caller_that_exits_while_helpers_start_prints_nothing(tmp_path):
    """Helpers still importing when the caller exits are killed at once, and a
    helper whose caller is gone exits quietly (no broken-pipe traceback)."""
    code = "import xpnet.procs as p; assert p.helpers(2) == 0"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, procs.PARALLEL_VARIABLE: "processes"},
        cwd=tmp_path,
    )
    assert done.returncode == 0 and done.stderr == ""
