"""The numerical gradient sharded over a dask.distributed cluster.

Rules of this module:

* ``dask.distributed`` is imported here only, when a cluster is used; without it
  the error names the extra to install (``pip install "xpnet[dask]"``).
* Work is split two ways. By samples: the loss is a mean over samples, so the
  gradient of the whole batch is the sum of the shards' gradients weighted by
  ``n_shard / N`` (the decay term, in every shard's gradient, gets weight 1 in
  all). By parameter blocks: rows of ``[W_l; b_l]`` (one row of inputs is
  perturbed at a time, independently of the others); the loop and batched
  methods take whole layers. A task is one (sample shard, parameter block).
* Data goes to the cluster once: each sample shard is scattered to one worker,
  the parameters to every worker; tasks refer to them. Results come back as
  host arrays and are added on the client in the plan's order, not in the
  order tasks finish, so the result does not depend on scheduling.
* A worker rebuilds the network from its configuration on its own device (with
  dask-cuda, the worker's GPU) and runs the same unchecked internals as one
  process: the data was validated once, on the client.
* Faults: a task whose worker dies is run again by Dask; a shard whose data died
  with its worker is scattered again and its tasks resubmitted (``retries``
  times). A cluster that cannot be reached, has no workers or loses its
  scheduler is one :class:`ClusterError`.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from concurrent.futures import CancelledError
from dataclasses import dataclass

import numpy as np  # host: results are combined on the host

from .backend import to_numpy

__all__ = [
    "ClusterError",
    "NetSpec",
    "connect",
    "plan",
    "require_distributed",
    "sharded_gradient",
    "worker_address",
]


#: Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand
#: memory back to the OS sooner); glibc then maps and unmaps every chunk of the
#: numerical gradient anew, and the structured gradient ran 3.2x slower (measured,
#: docs/benchmarks.md). xpnet's local clusters start workers without it.
_TRIM = "MALLOC_TRIM_THRESHOLD_"
#: below this trim threshold, sharded_gradient warns (once per client)
_TRIM_WARN_BELOW = 2**20
_WARNED: set = set()


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


def connect(scheduler=None, *, workers=2, timeout=None, cuda=False):
    """A ``distributed.Client``: to ``scheduler`` (an address) or to a new
    LocalCluster of ``workers`` processes bound to 127.0.0.1 (one thread each;
    dask-cuda's LocalCUDACluster when ``cuda``, one worker per GPU with
    ``workers=None``), returned once its workers have registered.

    The caller closes the client (and, for a local cluster, ``client.cluster``).
    ``timeout``: seconds; default Dask's ``distributed.comm.timeouts.connect``.

    Raises
    ------
    ClusterError
        The scheduler cannot be reached in ``timeout`` seconds, or the local
        cluster cannot start.
    """
    distributed = require_distributed()
    if timeout is None:
        timeout = _connect_timeout()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:g} s: {exc}"
            ) from None
        return client
    if not (workers is None and cuda) and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    import dask

    # a nanny started earlier in this process may have exported it to our environ
    inherited = os.environ.pop(_TRIM, None)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": _pre_spawn_environ()}):
            return _local_cluster(distributed, workers, timeout, cuda)
    finally:
        if inherited is not None:
            os.environ[_TRIM] = inherited


def _connect_timeout() -> float:
    """Seconds of Dask's ``distributed.comm.timeouts.connect`` (30 by default)."""
    import dask

    return dask.utils.parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))


def _pre_spawn_environ() -> dict:
    """Dask's environment for new worker processes, less ``MALLOC_TRIM_THRESHOLD_``
    (see :data:`_TRIM`)."""
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environ[_TRIM] = None  # Dask: None unsets a variable
    return environ


def _local_cluster(distributed, workers, timeout, cuda):
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
        client.close()
        cluster.close()
        raise ClusterError(
            f"the local Dask cluster's {expected} workers did not start within {timeout:g} s"
        ) from None
    return client


def worker_address() -> str:
    """The address of the Dask worker running the caller, or ``"local"``."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):  # not inside a worker task
        return "local"


@dataclass(frozen=True)
class NetSpec:
    """What a worker needs to rebuild a network (its parameters travel apart)."""

    sizes: tuple
    activation: str
    output: str
    weight_decay_lambda: float
    backend: str
    device: object
    dtype: str

    @classmethod
    def of(cls, net) -> NetSpec:
        backend = net.backend
        device = backend.device  # array_api_strict: its named device, as given
        if backend.name == "cupy":
            device = None  # the worker's current GPU (dask-cuda: one per worker)
        elif "cuda" in str(device):
            device = "cuda"  # torch: the worker's current GPU
        elif backend.name == "torch":
            device = "cpu"
        elif backend.name in ("numpy", "jax"):
            device = None
        return cls(
            tuple(net.sizes),
            net.activation,
            net.output,
            float(net.weight_decay_lambda),
            backend.name,
            device,
            backend.dtype_name,
        )


# one network per worker process and spec: rebuilding costs a random init
_NETS: dict = {}


def _worker_net(spec: NetSpec):
    net = _NETS.get(spec)
    if net is None:
        from .network import MultiLayerNet

        net = MultiLayerNet.shaped(
            spec.sizes,
            spec.activation,
            spec.output,
            spec.weight_decay_lambda,
            backend=spec.backend,
            device=spec.device,
            dtype=spec.dtype,
        )
        _NETS.clear()  # one at a time: a worker serves one network's gradients
        _NETS[spec] = net
    return net


def _shard_task(spec, host_params, shard, rows, method, h, max_bytes):
    """On a worker: the block ``rows`` of the mean gradient over one shard, as
    host arrays, one per layer (``None`` where the block has no rows)."""
    from .device import single_blas_thread

    net = _worker_net(spec)
    backend = net.backend
    x_host, t_host = shard
    with backend.activate():
        params = {k: backend.from_host(v, dtype=net.dtype) for k, v in host_params.items()}
        x = backend.from_host(x_host, dtype=net.dtype)
        t = backend.from_host(t_host)
        if method in ("structured", "complex"):
            # what one process computes (its budgets on this worker's device, the
            # decay), for these rows only
            with single_blas_thread(net.xp):
                blocks = net._structured_rows(
                    x, t, params, h=h, method=method, max_bytes=max_bytes, rows=rows
                )
            return [None if block is None else to_numpy(block) for block in blocks]
        wanted = {f"{p}{k}" for k, span in enumerate(rows, 1) if span is not None for p in "Wb"}
        grads = net._numerical_gradient(x, t, params, h=h, method=method, max_bytes=max_bytes)
        out = []
        for k, span in enumerate(rows, 1):
            if span is None or f"W{k}" not in wanted:
                out.append(None)
                continue
            stacked = np.concatenate(  # host
                [to_numpy(grads[f"W{k}"]), to_numpy(grads[f"b{k}"])[None, :]]
            )
            out.append(stacked[span[0] : span[1]])
        return out


def plan(n_samples, sizes, n_slots, method, *, shards=None, param_blocks=None):
    """The sample shards ``[(start, stop)]`` and parameter blocks (per block, per
    layer ``None`` or a row range of ``[W_l; b_l]``) of a sharded gradient.

    Defaults: two tasks per worker thread, from sample shards first (every shard
    holds all parameters: no work is repeated), then parameter blocks when there
    are fewer samples than that.
    """
    for name, value in (("shards", shards), ("param_blocks", param_blocks)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    target = 2 * max(int(n_slots), 1)
    shards = min(n_samples, target if shards is None else shards)
    if param_blocks is None:
        param_blocks = max(1, math.ceil(target / shards))
    edges = np.linspace(0, n_samples, shards + 1).round().astype(int)  # host
    sample_ranges = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    n_layers = len(sizes) - 1
    layer_rows = [sizes[k] + 1 for k in range(n_layers)]
    blocks = []
    if param_blocks == 1:  # every layer in one block: one forward pass per shard
        blocks.append([(0, rows) for rows in layer_rows])
    elif method in ("structured", "complex"):
        total = sum(layer_rows)
        for k, n_rows in enumerate(layer_rows):
            pieces = min(n_rows, max(1, round(param_blocks * n_rows / total)))
            cuts = np.linspace(0, n_rows, pieces + 1).round().astype(int)  # host
            for r0, r1 in zip(cuts[:-1], cuts[1:], strict=True):
                block = [None] * n_layers
                block[k] = (int(r0), int(r1))
                blocks.append(block)
    else:  # whole layers
        groups = np.array_split(np.arange(n_layers), min(param_blocks, n_layers))  # host
        for group in groups:
            block = [None] * n_layers
            for k in group:
                block[int(k)] = (0, layer_rows[int(k)])
            blocks.append(block)
    return sample_ranges, blocks


def sharded_gradient(
    net,
    x,
    targets,
    client,
    *,
    h,
    method,
    max_bytes=None,
    shards=None,
    param_blocks=None,
    retries=3,
) -> dict:
    """The numerical gradient of ``net`` over validated ``x``/``targets``, as tasks
    on ``client``'s cluster; the same dict of device arrays as one process gives."""
    distributed = require_distributed()
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    if client.status != "running":
        raise ClusterError(f"the Dask client is {client.status!r}, not running")
    try:
        workers = client.scheduler_info()["workers"]
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"lost the Dask scheduler: {exc}") from None
    if not workers:
        try:  # a cluster just started may register its workers a moment later
            client.wait_for_workers(1, timeout=_connect_timeout())
            workers = client.scheduler_info()["workers"]
        except (OSError, TimeoutError):
            raise ClusterError("the Dask cluster has no workers") from None
    slots = sum(w.get("nthreads", 1) for w in workers.values())
    _warn_about_malloc_trim(client)
    x_host, t_host = to_numpy(x), to_numpy(targets)
    n = x_host.shape[0]
    samples, blocks = plan(n, net.sizes, slots, method, shards=shards, param_blocks=param_blocks)
    spec = NetSpec.of(net)
    host_params = {k: to_numpy(v) for k, v in net._params().items()}
    try:
        results = _run_tasks(
            distributed,
            client,
            spec,
            host_params,
            [(x_host[a:b], t_host[a:b]) for a, b in samples],
            blocks,
            method,
            h,
            max_bytes,
            retries,
        )
    except (OSError, TimeoutError, distributed.client.FutureCancelledError) as exc:
        raise ClusterError(f"lost the Dask cluster during the gradient: {exc}") from None
    # combine on the host, in plan order: weights n_shard / N
    stacked = [
        np.zeros((net.sizes[k] + 1, net.sizes[k + 1]))  # host
        for k in range(len(net.sizes) - 1)
    ]
    for s, (a, b) in enumerate(samples):
        weight = (b - a) / n
        for j, block in enumerate(blocks):
            for k, span in enumerate(block):
                if span is not None:
                    stacked[k][span[0] : span[1]] += weight * results[s, j][k]
    grads = {}
    for k, rows in enumerate(stacked, 1):
        grads[f"W{k}"] = net.backend.from_host(rows[:-1], dtype=net.dtype)
        grads[f"b{k}"] = net.backend.from_host(rows[-1], dtype=net.dtype)
    return grads


def _trim_threshold():
    """On a worker: its ``MALLOC_TRIM_THRESHOLD_`` (None where unset)."""
    return os.environ.get(_TRIM)


def _warn_about_malloc_trim(client) -> None:
    """Warn once per client when workers run with a small malloc trim threshold."""
    if client.id in _WARNED:
        return
    _WARNED.add(client.id)
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


def _run_tasks(
    distributed, client, spec, host_params, shards, blocks, method, h, max_bytes, retries
):
    """Results ``{(shard, block): [host arrays]}``: every task run to the end once,
    its result fetched as soon as it is done (a result left on a worker dies with
    it); data lost with a worker is scattered again and its tasks resubmitted."""
    params = None
    data = {}
    results = {}
    todo = [(s, j) for s in range(len(shards)) for j in range(len(blocks))]
    for _ in range(retries + 1):
        if params is None or params.status != "finished":
            params = client.scatter([host_params], broadcast=True, hash=False)[0]
        for s in sorted({s for s, _ in todo}):
            if s not in data or data[s].status != "finished":
                data[s] = client.scatter([shards[s]], hash=False)[0]
        futures = {
            key: client.submit(
                _shard_task,
                spec,
                params,
                data[key[0]],
                blocks[key[1]],
                method,
                h,
                max_bytes,
                pure=False,
            )
            for key in todo
        }
        try:
            todo = sorted(_collect(distributed, client, futures, data, results))
        except BaseException:
            # an error or an interrupt: nothing of this gradient keeps running
            client.cancel([f for f in futures.values() if not f.done()])
            raise
        if not todo:
            return results
    raise ClusterError(
        f"{len(todo)} gradient tasks were lost with their workers {retries + 1} times; "
        "the cluster is losing workers faster than it can compute"
    )


def _collect(distributed, client, futures, data, results, poll=0.1) -> set:
    """Fetch every task's result into ``results`` as it finishes; return the keys
    of tasks lost with a worker (cancelled, killed, or their data gone).

    Raises
    ------
    ClusterError
        The client stayed disconnected from its scheduler for longer than Dask's
        connect timeout (``distributed.comm.timeouts.connect``, 30 s by default).
    Exception
        What a task raised (a bug or a bad input, not a lost worker).
    """
    grace = _connect_timeout()
    retryable = (distributed.scheduler.KilledWorker, CancelledError)
    pending = dict(futures)
    lost = set()
    disconnected = None
    while pending:
        try:
            distributed.wait(list(pending.values()), timeout=poll, return_when="FIRST_COMPLETED")
        except (TimeoutError, CancelledError):
            pass  # the statuses below say what happened
        if client.status != "running":
            disconnected = disconnected or time.monotonic()
            if time.monotonic() - disconnected > grace:
                raise ClusterError(
                    f"lost the Dask scheduler during the gradient (client {client.status!r} "
                    f"for {grace:g} s)"
                )
            continue
        disconnected = None
        dead = {s for s, future in data.items() if future.status not in ("finished", "pending")}
        for key, future in list(pending.items()):
            status = future.status
            if status == "finished":
                try:
                    results[key] = future.result()
                except retryable:
                    lost.add(key)
            elif status == "error":
                exc = future.exception()
                if not isinstance(exc, retryable):
                    raise exc
                lost.add(key)
            elif status in ("cancelled", "lost"):
                lost.add(key)
            elif key[0] in dead:
                future.cancel()
                lost.add(key)
            else:
                continue
            del pending[key]
    return lost
