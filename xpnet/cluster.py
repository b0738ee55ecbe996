"""Dask clusters: connecting to one, starting a local one, and the malloc setting.

Rules of this module:

* ``dask.distributed`` is imported here (and in :mod:`xpnet.distributed` and
  :mod:`xpnet.sweep`) only when a cluster is used; without it the error names
  the extra to install (``pip install "xpnet[dask]"``).
* Local clusters listen on 127.0.0.1 only (scheduler, workers and dashboard) and
  are returned once their workers have registered.
* Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``; glibc then
  maps and unmaps every chunk of the numerical gradient anew, and the structured
  gradient ran 3.2x slower (measured, docs/benchmarks.md). xpnet's local clusters
  start workers without it; :func:`check_malloc_trim` warns about a cluster whose
  workers have it.
* A cluster that cannot be reached, does not start or has no workers is one
  :class:`ClusterError` naming what was tried.
"""

from __future__ import annotations

import os
import warnings

from . import checks

__all__ = [
    "ClusterError",
    "connect",
    "connect_timeout",
    "require_distributed",
    "worker_address",
    "check_malloc_trim",
    "close",
]

_TRIM = "MALLOC_TRIM_THRESHOLD_"
#: below this trim threshold, :func:`check_malloc_trim` warns
_TRIM_WARN_BELOW = 2**20


class ClusterError(RuntimeError):
    """The Dask cluster cannot be reached, has no workers, or was lost."""


def require_distributed():
    """The ``distributed`` module, or an ImportError that says how to get it."""
    try:
        import distributed
    except ImportError:
        raise ImportError(
            'a Dask cluster needs dask.distributed: pip install "xpnet[dask]"'
        ) from None
    return distributed


def connect_timeout() -> float:
    """Seconds of Dask's ``distributed.comm.timeouts.connect`` (30 by default)."""
    import dask

    return dask.utils.parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))


def connect(scheduler=None, *, workers=2, timeout=None, cuda=False):
    """A ``distributed.Client``: to ``scheduler`` (an address) or to a new
    LocalCluster of ``workers`` processes bound to 127.0.0.1 (one thread each;
    dask-cuda's LocalCUDACluster when ``cuda``, one worker per GPU with
    ``workers=None``), returned once its workers have registered.

    The caller closes it with :func:`close`. ``timeout``: seconds for the whole
    handshake; default Dask's ``distributed.comm.timeouts.connect``.

    Raises
    ------
    ClusterError
        The scheduler cannot be reached (or does not answer as a Dask scheduler)
        within ``timeout`` seconds, or the local cluster cannot start.
    """
    distributed = require_distributed()
    if timeout is None:
        timeout = connect_timeout()
    if scheduler is not None:
        return _remote(distributed, scheduler, timeout)
    if not (workers is None and cuda):
        checks.positive_int("workers", workers)
    import dask

    # a nanny started earlier in this process may have exported it to our environ
    inherited = os.environ.pop(_TRIM, None)
    try:
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
        environ[_TRIM] = None  # Dask: None unsets a variable
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            return _local(distributed, workers, timeout, cuda)
    finally:
        if inherited is not None:
            os.environ[_TRIM] = inherited


def _remote(distributed, scheduler, timeout):
    """A client of a running scheduler; the handshake as a whole is bounded (a
    port that accepts connections but is not Dask never answers it, and Dask's
    own timeout covers only the TCP connection): the client is made on a
    helper thread, waited for ``timeout`` seconds at most."""
    import asyncio
    import threading

    made = {}

    def make():
        try:
            made["client"] = distributed.Client(scheduler, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            made["error"] = exc

    helper = threading.Thread(target=make, name="xpnet-dask-connect", daemon=True)
    helper.start()
    helper.join(timeout + 1.0)
    if helper.is_alive():  # still waiting for an answer that does not come
        raise ClusterError(
            f"cannot reach a Dask scheduler at {scheduler!r} within {timeout:g} s: "
            "the port accepted the connection but did not answer as a Dask scheduler"
        )
    error = made.get("error")
    if isinstance(error, (OSError, TimeoutError, ValueError, asyncio.TimeoutError)):
        raise ClusterError(
            f"cannot reach a Dask scheduler at {scheduler!r} within {timeout:g} s: {error}"
        ) from None
    if error is not None:
        raise error
    return made["client"]


def _local(distributed, workers, timeout, cuda):
    try:
        if cuda:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError:
                raise ImportError(
                    'one worker per GPU needs dask-cuda: pip install "xpnet[dask-cuda]"'
                ) from None
            cluster = LocalCUDACluster(
                n_workers=workers, host="127.0.0.1", dashboard_address="127.0.0.1:0"
            )
        else:
            cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
            )
    except (OSError, TimeoutError, RuntimeError) as exc:
        raise ClusterError(
            f"cannot start a local Dask cluster of {workers} workers: {exc}"
        ) from None
    client = distributed.Client(cluster, timeout=timeout)
    expected = workers if workers is not None else len(cluster.workers)  # cuda: every GPU
    try:  # a busy machine may register the workers after the cluster is up
        client.wait_for_workers(expected, timeout=timeout)
    except TimeoutError:
        close(client)
        raise ClusterError(
            f"the local Dask cluster's {expected} workers did not start within {timeout:g} s"
        ) from None
    return client


def close(client) -> None:
    """Close ``client`` and the local cluster it started, if any."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def worker_address() -> str:
    """The address of the Dask worker running the caller, or ``"local"``."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):  # not inside a worker task
        return "local"


def _trim_threshold():
    """On a worker: its ``MALLOC_TRIM_THRESHOLD_`` (None where unset)."""
    return os.environ.get(_TRIM)


def check_malloc_trim(client) -> None:
    """Warn when ``client``'s workers run with a small malloc trim threshold
    (Python shows a given warning once per place it is raised from)."""
    values = client.run(_trim_threshold).values()
    small = [v for v in values if v is not None and v.isdigit() and int(v) < _TRIM_WARN_BELOW]
    if small:
        warnings.warn(
            f"{len(small)} Dask worker(s) run with {_TRIM}={small[0]} (Dask's default), "
            "which made the numerical gradient about 3x slower (glibc maps and unmaps "
            "every chunk); start workers without it (docs/distributed.md)",
            RuntimeWarning,
            stacklevel=3,
        )
