"""Connecting to a Dask cluster, and the local clusters xpnet starts.

Clusters bind to 127.0.0.1 only and are started and stopped here.
"""

import os
import sys

import numpy as np
import pytest

import xpnet
from xpnet.cluster import ClusterError, connect

distributed = pytest.importorskip("distributed")


def test_a_bad_worker_count_is_a_clear_error():
    with pytest.raises(ValueError, match="workers must be a positive int"):
        connect(workers=0)


def test_an_unreachable_scheduler_is_one_clear_error():
    with pytest.raises(ClusterError, match="cannot reach a Dask scheduler at 'tcp://127.0.0.1:9'"):
        connect("tcp://127.0.0.1:9", timeout=0.2)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's socket table")
def test_a_local_cluster_listens_on_127_0_0_1_only():
    def listening():
        found = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as handle:
                for line in handle.readlines()[1:]:
                    fields = line.split()
                    if fields[3] == "0A":  # LISTEN
                        found.add(fields[1])
        return found

    before = listening()
    client = connect(workers=2)
    try:
        opened = listening() - before
    finally:
        client.close()
        client.cluster.close()
    assert opened, "the cluster opened no socket"
    assert all(address.startswith("0100007F:") for address in opened), opened


@pytest.mark.slow
def test_workers_start_without_dasks_malloc_trim_threshold_and_others_are_warned_about(
    monkeypatch,
):
    """Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536, which made the structured
    gradient 3x slower (docs/benchmarks.md): xpnet's clusters unset it; a cluster
    started with Dask's defaults gets one warning per client."""
    from xpnet.cluster import _trim_threshold

    # Dask's nannies may leave the variable in this process's environment: put it
    # back as it was afterwards (the in-process clusters of other tests read it)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")

    ours = connect(workers=1)
    try:
        assert set(ours.run(_trim_threshold).values()) == {None}
    finally:
        ours.close()
        ours.cluster.close()
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    )
    client = distributed.Client(cluster)
    try:
        assert set(client.run(_trim_threshold).values()) == {"65536"}
        net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
        x, t = np.ones((4, 4)), np.array([0, 1, 0, 1])
        with pytest.warns(RuntimeWarning, match="MALLOC_TRIM_THRESHOLD_=65536"):
            net.numerical_gradient(x, t, client=client)
        net.numerical_gradient(x, t, client=client)  # once per client: no second warning
    finally:
        client.close()
        cluster.close()


def test_one_worker_per_gpu_needs_dask_cuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_cuda", None)
    with pytest.raises(ImportError, match=r'pip install "xpnet\[dask-cuda\]"'):
        connect(workers=1, cuda=True)


@pytest.mark.parametrize("kind", ["silent", "http"])
def test_a_port_that_is_not_dask_is_one_error_within_the_timeout(kind):
    """A listener that accepts and never answers (or answers as HTTP) used to
    hang the handshake for minutes; now it is one ClusterError in time."""
    import http.server
    import socket
    import threading
    import time

    if kind == "silent":
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(5)
        port, held = server.getsockname()[1], []
        threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()

        def close():
            for connection in held:
                connection.close()
            server.close()
    else:

        class Quiet(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        httpd.daemon_threads = True  # a handler waiting on Dask's bytes never blocks the end
        port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()

        def close():
            httpd.shutdown()
            httpd.server_close()

    try:
        start = time.monotonic()
        with pytest.raises(ClusterError, match="cannot reach a Dask scheduler"):
            connect(f"tcp://127.0.0.1:{port}", timeout=1.0)
        assert time.monotonic() - start < 10
    finally:
        close()
