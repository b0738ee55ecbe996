"""The numerical gradient sharded over a Dask cluster equals one process's.

Clusters bind to 127.0.0.1 only and are started and stopped here. The default
tier uses an in-process cluster (two workers as threads of this process, no
socket); the slow tier starts worker processes and kills one with SIGKILL.

Tolerance: shards add the same central differences in another order and over
other sample subsets; the structured/complex methods difference per sample
(~1e-16 relative), the loop and batched ones difference whole shard losses
(eps * L / h ~ 1e-12 relative to O(1) gradients). 1e-9 is the issue's bound.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest
from conftest import (
    assert_on_backend,
    host_loop_gradient,
    make_batch,
    make_multi,
    make_net,
    make_targets,
    xp_assert_close,
)

import xpnet
from xpnet.cluster import ClusterError, connect
from xpnet.distributed import WorkerSpec, plan

distributed = pytest.importorskip("distributed")

METHODS = ["structured", "complex", "loop", "batched"]


@pytest.fixture(scope="module")
def process_client():
    client = connect(workers=2)
    assert all(a.startswith("tcp://127.0.0.1:") for a in client.scheduler_info()["workers"])
    yield client
    client.cluster.close()
    client.close()


def _single_process(net, x, t, method):
    """One process's gradient; for the loop, NumPy's (computed once per case: the
    loop on every backend equals the book's, test_gradient.py)."""
    if method == "loop":
        return host_loop_gradient(net, x, t)
    return net.numerical_gradient(x, t, method=method)


def _assert_equal(got, expected, bound=1e-9):
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].shape == expected[name].shape
        xp_assert_close(got[name], expected[name], rtol=bound, err_msg=name)


@pytest.mark.parametrize("method", METHODS)
def test_two_layer_net_sharded_equals_one_process(backend, inproc_client, method):
    net = make_net(backend, (8, 4, 3))
    x, t = make_batch(9, 8, 3, seed=3)
    expected = _single_process(net, x, t, method)
    got = net.numerical_gradient(x, t, method=method, client=inproc_client)
    assert_on_backend(got["W1"], backend, shape=(8, 4))
    _assert_equal(got, expected)


@pytest.mark.parametrize(
    "method, output",
    [
        ("structured", "softmax"),
        ("complex", "sigmoid"),
        ("loop", "identity"),
        ("batched", "sigmoid"),
    ],
)
def test_multilayer_net_sharded_equals_one_process(backend, inproc_client, method, output):
    net = make_multi(backend, (5, 3, 3, 2), activation="sigmoid", output=output, decay=0.1)
    x, _ = make_batch(7, 5, 2, seed=4)
    t = make_targets(output, 7, 2, seed=4)
    expected = _single_process(net, x, t, method)
    got = net.numerical_gradient(x, t, method=method, client=inproc_client, shards=2)
    _assert_equal(got, expected)


@pytest.mark.parametrize("shards, blocks", [(1, 1), (1, 9), (7, 1), (3, 4), (50, 2)])
def test_any_split_gives_the_same_gradient(inproc_client, shards, blocks):
    """Parameter blocks alone (one sample shard), sample shards alone, both, and
    more shards than samples (capped)."""
    backend = xpnet.resolve_backend("numpy")
    net = make_multi(backend, (9, 6, 4, 3), activation="relu", decay=0.05)
    x, t = make_batch(7, 9, 3, seed=5)
    expected = net.numerical_gradient(x, t)
    got = net.numerical_gradient(x, t, client=inproc_client, shards=shards, param_blocks=blocks)
    _assert_equal(got, expected)


@pytest.mark.parametrize("method", ["structured", "loop"])
def test_plan_covers_every_sample_and_row_exactly_once(method):
    sizes = (784, 100, 50, 10)
    for n, slots in ((1, 2), (3, 8), (100, 2), (10_000, 16)):
        samples, blocks = plan(n, sizes, slots, method)
        covered = np.zeros(n, int)  # every sample in exactly one shard
        for a, b in samples:
            covered[a:b] += 1
        assert (covered == 1).all()
        for k in range(len(sizes) - 1):
            rows = np.zeros(sizes[k] + 1, int)
            for block in blocks:
                if block[k] is not None:
                    rows[block[k][0] : block[k][1]] += 1
            assert (rows == 1).all(), (n, slots, k)
        assert len(samples) * len(blocks) >= min(2 * slots, n * len(blocks))


def test_worker_spec_sends_gpu_work_to_each_workers_own_device():
    numpy_net = xpnet.TwoLayerNet(4, 3, 2)
    assert WorkerSpec.of(numpy_net.spec, numpy_net.backend).device is None
    strict = xpnet.TwoLayerNet(4, 3, 2, backend="array_api_strict", device="device1")
    assert str(WorkerSpec.of(strict.spec, strict.backend).device) == str(strict.device)


def test_bad_client_and_split_arguments_are_clear_errors(inproc_client):
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    x, t = np.ones((3, 4)), np.array([0, 1, 0])
    with pytest.raises(TypeError, match="client must be a distributed.Client"):
        net.numerical_gradient(x, t, client="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="shards and param_blocks split work for a client"):
        net.numerical_gradient(x, t, shards=2)
    with pytest.raises(ValueError, match="shards must be a positive int"):
        net.numerical_gradient(x, t, client=inproc_client, shards=0)
    with pytest.raises(TypeError, match="param_blocks must be a positive int"):
        net.numerical_gradient(x, t, client=inproc_client, param_blocks=1.5)


def test_without_dask_the_error_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    with pytest.raises(ImportError, match=r'pip install "xpnet\[dask\]"'):
        net.numerical_gradient(np.ones((2, 4)), np.array([0, 1]), client=object())


def test_a_task_that_fails_raises_its_own_error(inproc_client, monkeypatch):
    """A bug or bad input in a task is not mistaken for a lost worker (the
    in-process workers run this module's functions, patched here)."""
    import xpnet.distributed as module

    def broken(*args, **kwargs):
        raise ZeroDivisionError("inside a task")

    monkeypatch.setattr(module, "_shard_task", broken)
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    with pytest.raises(ZeroDivisionError, match="inside a task"):
        net.numerical_gradient(np.ones((4, 4)), np.array([0, 1, 0, 1]), client=inproc_client)


def test_a_task_uses_one_core(inproc_client, monkeypatch):
    """Each task is one of the cluster's slots: it computes on one core (more
    would start helper processes in every worker, oversubscribing the machine)."""
    import xpnet.distributed as module

    seen = []

    def recording(*args, **kwargs):
        seen.append(kwargs.get("n_threads"))
        return model_gradient(*args, **kwargs)

    model_gradient = module.model_gradient
    monkeypatch.setattr(module, "model_gradient", recording)
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    net.numerical_gradient(np.ones((4, 4)), np.array([0, 1, 0, 1]), client=inproc_client)
    assert seen and set(seen) == {1}


@pytest.mark.slow
@pytest.mark.parametrize("cls", ["TwoLayerNet", "MultiLayerNet"])
def test_worker_processes_give_the_same_gradient(process_client, cls):
    backend = xpnet.resolve_backend("numpy")
    if cls == "TwoLayerNet":
        net = make_net(backend, (30, 8, 4))
    else:
        net = make_multi(backend, (30, 8, 6, 4), activation="relu", decay=0.01)
    x, t = make_batch(40, 30, 4, seed=6)
    for method in METHODS:
        expected = net.numerical_gradient(x, t, method=method)
        _assert_equal(net.numerical_gradient(x, t, method=method, client=process_client), expected)


@pytest.mark.slow
def test_a_worker_killed_mid_gradient_changes_nothing(process_client):
    backend = xpnet.resolve_backend("numpy")
    net = make_multi(backend, (60, 20, 10, 4), activation="sigmoid")
    x, t = make_batch(80, 60, 4, seed=7)
    expected = net.numerical_gradient(x, t, method="loop")
    pids = process_client.run(os.getpid)  # worker address -> pid
    victim = sorted(pids.values())[0]
    started = time.monotonic()

    def kill():
        time.sleep(0.8)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    got = net.numerical_gradient(x, t, method="loop", client=process_client, shards=8)
    killer.join()
    assert time.monotonic() - started > 0.8, "the gradient ended before the kill"
    _assert_equal(got, expected)
    process_client.wait_for_workers(2, timeout=60)  # the nanny restarted it
    assert victim not in process_client.run(os.getpid).values()


@pytest.mark.slow
def test_a_lost_scheduler_is_one_clear_error():
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        cluster = distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
        )
        client = distributed.Client(cluster)
        net = make_multi(xpnet.resolve_backend("numpy"), (60, 20, 10, 4), activation="sigmoid")
        x, t = make_batch(80, 60, 4, seed=7)

        def stop():
            time.sleep(0.5)
            client.sync(cluster.scheduler.close)

        stopper = threading.Thread(target=stop)
        stopper.start()
        try:
            with pytest.raises(ClusterError, match="lost the Dask"):
                net.numerical_gradient(x, t, method="loop", client=client, shards=8)
        finally:
            stopper.join()
            client.close()
            cluster.close()
