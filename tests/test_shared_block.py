"""One sample block on two processes (xpnet.shared_block): a net with one sigmoid
hidden layer on two cores, with a real helper process. NumPy host work only,
so no backend fixture."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import make_batch, make_targets

import xpnet
from xpnet import procs, shared_block, structured, team

pytestmark = pytest.mark.skipif(
    not (hasattr(os, "memfd_create") and os.sys.platform == "linux"),
    reason="helper processes need Linux (memfd_create)",
)


@pytest.fixture
def pool(monkeypatch):
    """A pool of this test's own with one helper ready, stopped after it; the
    path taken even for a tiny net (no least work per thread)."""
    monkeypatch.delenv(procs.PARALLEL_VARIABLE, raising=False)
    fresh = procs._Pool()
    monkeypatch.setattr(procs, "_POOL", fresh)
    monkeypatch.setattr(structured, "_THREAD_SHARE_BYTES", 0)
    assert procs.helpers(1, wait=True) == 1
    yield fresh
    fresh.stop()


@pytest.fixture
def taken(monkeypatch):
    """How many gradients took the shared block (a list, one item each)."""
    calls, real = [], shared_block.gradient_rows
    monkeypatch.setattr(shared_block, "gradient_rows", lambda *a: calls.append(1) or real(*a))
    return calls


def _net(output="softmax", dtype="float64", sizes=(30, 12, 4)):
    net = xpnet.MultiLayerNet(
        sizes[0], list(sizes[1:-1]), sizes[-1], "sigmoid", 0.5, output=output, dtype=dtype, seed=1
    )
    x, _ = make_batch(24, sizes[0], sizes[-1], seed=4, sparsity=0.4)
    return net, x.astype(dtype), make_targets(output, 24, sizes[-1], seed=4)


@pytest.mark.parametrize("output", ["softmax", "sigmoid", "identity"])
@pytest.mark.parametrize("method", ["structured", "complex"])
def test_two_cores_give_the_one_thread_gradient_bit_for_bit(pool, taken, output, method):
    """Both sides evaluate every perturbed loss as the one-thread path does,
    with the same arithmetic: the same bits whichever side took each piece."""
    net, x, t = _net(output)
    two = net.numerical_gradient(x, t, method=method, n_threads=2)
    assert taken == [1]
    one = net.numerical_gradient(x, t, method=method, n_threads=1)
    assert taken == [1]  # one thread: not shared
    for name in one:
        np.testing.assert_array_equal(two[name], one[name], err_msg=name)
    loop = net.numerical_gradient(x, t, method="loop")
    for name in loop:  # and an independent check: the book's loop, to its accuracy
        np.testing.assert_allclose(two[name], loop[name], rtol=1e-6, atol=1e-9, err_msg=name)


def test_float32_is_shared_too(pool, taken):
    net, x, t = _net(dtype="float32")
    two = net.numerical_gradient(x, t, n_threads=2)
    one = net.numerical_gradient(x, t, n_threads=1)
    assert taken == [1]
    for name in one:
        assert two[name].dtype == np.float32
        np.testing.assert_array_equal(two[name], one[name], err_msg=name)


def test_each_gradient_shares_its_own_values(pool, taken):
    """The helper keeps what it unpickled while the same shapes come: its
    arrays hold each gradient's new inputs and weights."""
    net, x, t = _net()
    for k in range(3):
        net.params["W1"] = net.params["W1"] * 1.1
        xk = np.roll(x, k, axis=0)
        two = net.numerical_gradient(xk, t, n_threads=2)
        one = net.numerical_gradient(xk, t, n_threads=1)
        for name in one:
            np.testing.assert_array_equal(two[name], one[name], err_msg=f"{name}, gradient {k}")
    assert taken == [1, 1, 1]


def test_a_helper_killed_as_the_team_starts_leaves_the_caller_alone(pool, taken, monkeypatch):
    """The caller plans and computes alone (the same bits), the helper is dropped,
    and the next gradient shares its block with a new one."""
    net, x, t = _net()
    killed = []
    real_start = team.Link.start

    def start_then_kill(link, *args):
        real_start(link, *args)
        helper = pool.helpers[0]
        helper.process.kill()
        helper.process.wait()
        killed.append(helper)

    monkeypatch.setattr(team.Link, "start", start_then_kill)
    alone = net.numerical_gradient(x, t, n_threads=2)
    assert taken == [1] and killed and not killed[0].alive  # dropped
    one = net.numerical_gradient(x, t, n_threads=1)
    for name in one:
        np.testing.assert_array_equal(alone[name], one[name], err_msg=name)
    monkeypatch.setattr(team.Link, "start", real_start)
    assert procs.helpers(1, wait=True) == 1 and killed[0] not in pool.helpers
    again = net.numerical_gradient(x, t, n_threads=2)
    assert taken == [1, 1]
    for name in one:
        np.testing.assert_array_equal(again[name], one[name], err_msg=name)


def test_an_error_in_the_caller_drops_the_helper_mid_team(pool, taken, monkeypatch):
    """The caller's own error (here a Ctrl-C in its rows) propagates; the helper,
    left mid-team, is dropped, and the next gradient has a new one."""
    net, x, t = _net()
    helper, real = pool.helpers[0], shared_block.hidden_rows

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(shared_block, "hidden_rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        net.numerical_gradient(x, t, n_threads=2)
    assert taken == [1] and not helper.alive
    monkeypatch.setattr(shared_block, "hidden_rows", real)
    assert procs.helpers(1, wait=True) == 1 and helper not in pool.helpers
    again = net.numerical_gradient(x, t, n_threads=2)
    one = net.numerical_gradient(x, t, n_threads=1)
    for name in one:
        np.testing.assert_array_equal(again[name], one[name], err_msg=name)


@pytest.mark.parametrize(
    "case",
    ["relu", "two hidden layers", "one thread", "three threads", "a shard", "a small budget"],
)
def test_other_gradients_keep_the_sample_blocks(pool, taken, case):
    """ReLU and deeper nets, other thread counts, a shard's rows and a batch
    that is not one block within max_bytes are split into sample blocks."""
    sizes = (30, 12, 9, 4) if case == "two hidden layers" else (30, 12, 4)
    activation = "relu" if case == "relu" else "sigmoid"
    net = xpnet.MultiLayerNet(sizes[0], list(sizes[1:-1]), sizes[-1], activation, 0.5, seed=1)
    x, t = make_batch(24, sizes[0], sizes[-1], seed=4)
    threads = {"one thread": 1, "three threads": 3}.get(case, 2)
    kwargs = {"max_bytes": 4000} if case == "a small budget" else {}
    if case == "a shard":
        layers = net.checked_layers()
        structured.structured_gradient(
            net.spec, layers, x, net.batch(x, t).t, n_threads=2, rows=[(0, 5), None]
        )
    else:
        net.numerical_gradient(x, t, n_threads=threads, **kwargs)
    assert taken == []
