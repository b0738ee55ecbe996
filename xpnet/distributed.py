"""The numerical gradient sharded over a dask.distributed cluster.

Rules of this module:

* Work is split two ways. By samples: the loss is a mean over samples, so the
  gradient of the whole batch is the sum of the shards' gradients weighted by
  ``n_shard / N`` (the decay term, in every shard's gradient, gets weight 1 in
  all). By parameter blocks: rows of ``[W_l; b_l]`` (one row of inputs is
  perturbed at a time, independently of the others); every method computes only
  its block's rows. A task is one (sample shard, parameter block).
* Dask does the scheduling: the parameters and each sample shard go to the
  cluster once, as the results of tasks that hold them (not ``scatter``: Dask's
  memory manager keeps one replica of scattered data, which a worker's death
  loses for good, while a task's result is recomputed from its spec);
  the shard tasks depend on them, are ``submit``-ted with ``retries``, their
  results collected with ``as_completed`` and combined on the host in the plan's
  order (not the order tasks finish), so the result does not depend on
  scheduling. Whatever a dead worker held or ran, Dask's scheduler runs again
  elsewhere; an error or an interrupt cancels the gradient's remaining tasks.
* A worker runs the model core (:func:`xpnet.numerical.model_gradient`) on its
  own device (with dask-cuda, the worker's GPU), unchecked: the data was
  validated once, on the client. A task uses one core (``n_threads=1``): the
  cluster's parallelism is its worker threads, each with tasks of its own.
  Nothing here imports the network classes.
* A cluster that cannot be reached, has no workers or loses its scheduler is
  one :class:`xpnet.cluster.ClusterError`.
"""

from __future__ import annotations

import math
import weakref
from concurrent.futures import CancelledError
from dataclasses import dataclass

import numpy as np  # host: results are combined on the host

from . import model
from .backend import Backend, resolve_backend, to_numpy
from .checks import positive_int
from .cluster import ClusterError, check_malloc_trim, connect_timeout, require_distributed
from .numerical import model_gradient

__all__ = ["WorkerSpec", "plan", "sharded_gradient"]


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs besides the data: the model and where to compute."""

    model_spec: model.ModelSpec
    backend: str
    device: object
    dtype: str

    @classmethod
    def of(cls, spec: model.ModelSpec, backend: Backend) -> WorkerSpec:
        """The spec of a client's network for its workers: GPU work goes to each
        worker's own device, host work to the host."""
        return cls(spec, backend.name, backend.worker_device(), backend.dtype_name)


def _shard_task(worker: WorkerSpec, host_layers, shard, rows, method, h, max_bytes):
    """On a worker: the rows ``rows`` of the mean gradient over one shard, as host
    arrays, one per layer (``None`` where the block has no rows)."""
    backend = resolve_backend(worker.backend, worker.device, worker.dtype)
    x_host, t_host = shard
    with backend.activate():
        layers = [
            (backend.from_host(W, dtype=backend.dtype), backend.from_host(b, dtype=backend.dtype))
            for W, b in host_layers
        ]
        batch = model.Batch(
            backend.from_host(x_host, dtype=backend.dtype), backend.from_host(t_host)
        )
        # one core per task: the plan gives every worker thread tasks of its own
        # (more cores per task would start helpers in every worker: oversubscribed)
        blocks = model_gradient(
            worker.model_spec,
            layers,
            batch,
            h=h,
            method=method,
            max_bytes=max_bytes,
            n_threads=1,
            rows=rows,
        )
    return [None if block is None else to_numpy(block) for block in blocks]


def plan(n_samples, sizes, n_slots, method, *, shards=None, param_blocks=None):
    """The sample shards ``[(start, stop)]`` and parameter blocks (per block, per
    layer ``None`` or a row range of ``[W_l; b_l]``) of a sharded gradient.

    Defaults: two tasks per worker thread, from sample shards first (every shard
    holds all parameters: no work is repeated), then parameter blocks when there
    are fewer samples than that. ``method`` does not change the plan (every
    method computes only its rows); it is kept for callers that pass it.
    """
    if shards is not None:
        shards = positive_int("shards", shards)
    if param_blocks is not None:
        param_blocks = positive_int("param_blocks", param_blocks)
    target = 2 * max(int(n_slots), 1)
    shards = min(n_samples, target if shards is None else shards)
    if param_blocks is None:
        param_blocks = max(1, math.ceil(target / shards))
    edges = np.linspace(0, n_samples, shards + 1).round().astype(int)  # host
    sample_ranges = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    n_layers = len(sizes) - 1
    layer_rows = [sizes[k] + 1 for k in range(n_layers)]
    if param_blocks == 1:  # every layer in one block: one forward pass per shard
        return sample_ranges, [[(0, rows) for rows in layer_rows]]
    blocks = []
    total = sum(layer_rows)
    for k, n_rows in enumerate(layer_rows):
        pieces = min(n_rows, max(1, round(param_blocks * n_rows / total)))
        cuts = np.linspace(0, n_rows, pieces + 1).round().astype(int)  # host
        for r0, r1 in zip(cuts[:-1], cuts[1:], strict=True):
            block = [None] * n_layers
            block[k] = (int(r0), int(r1))
            blocks.append(block)
    return sample_ranges, blocks


# clients whose workers' malloc setting was checked (one warning per client)
_CHECKED: weakref.WeakSet = weakref.WeakSet()


def sharded_gradient(
    spec: model.ModelSpec,
    layers,
    batch: model.Batch,
    client,
    *,
    backend: Backend,
    h: float,
    method: str,
    max_bytes=None,
    shards=None,
    param_blocks=None,
    retries: int = 2,
) -> list:
    """The numerical gradient of a model over a validated batch, as tasks on
    ``client``'s cluster: per layer the stacked ``[dW; db]`` on ``backend``, as
    one process computes it (:func:`xpnet.numerical.model_gradient`)."""
    distributed = require_distributed()
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    if client.status != "running":
        raise ClusterError(f"the Dask client is {client.status!r}, not running")
    slots = _slots(client)
    if client not in _CHECKED:
        _CHECKED.add(client)
        check_malloc_trim(client)
    x_host, t_host = to_numpy(batch.x), to_numpy(batch.t)
    n = x_host.shape[0]
    samples, blocks = plan(n, spec.sizes, slots, method, shards=shards, param_blocks=param_blocks)
    host_layers = [(to_numpy(W), to_numpy(b)) for W, b in layers]
    worker = WorkerSpec.of(spec, backend)
    futures = {}
    try:
        # inputs go to the cluster once, held as tasks' results (recomputed from
        # their specs if a worker dies; scattered data would be lost with it)
        params = client.submit(_held, host_layers, pure=False, retries=retries)
        for s, (a, b) in enumerate(samples):
            data = client.submit(_held, (x_host[a:b], t_host[a:b]), pure=False, retries=retries)
            for j, rows in enumerate(blocks):
                future = client.submit(
                    _shard_task, worker, params, data, rows, method, h, max_bytes,
                    retries=retries, pure=False,
                )  # fmt: skip
                futures[future] = (s, j)
        results = {}
        for future in distributed.as_completed(list(futures)):
            results[futures[future]] = future.result()
    except (distributed.scheduler.KilledWorker, CancelledError, OSError, TimeoutError) as exc:
        _cancel(client, futures)
        raise ClusterError(f"lost the Dask cluster during the gradient: {exc}") from None
    except BaseException:
        _cancel(client, futures)  # an error or an interrupt: nothing of it keeps running
        raise
    return _combine(backend, spec, samples, blocks, results, n)


def _held(value):
    """On a worker: ``value`` (sent with the task), held as the task's result for
    the tasks that depend on it."""
    return value


def _slots(client) -> int:
    """Worker threads of the cluster (waiting for a first worker if none yet)."""
    try:
        workers = client.scheduler_info()["workers"]
        if not workers:  # a cluster just started may register its workers a moment later
            client.wait_for_workers(1, timeout=connect_timeout())
            workers = client.scheduler_info()["workers"]
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"the Dask cluster has no workers or cannot be reached: {exc}") from None
    return sum(w.get("nthreads", 1) for w in workers.values())


def _cancel(client, futures) -> None:
    pending = [f for f in futures if not f.done()]
    if pending and client.status == "running":
        client.cancel(pending)


def _combine(backend, spec, samples, blocks, results, n):
    """Shard results added on the host in plan order, weights ``n_shard / N``."""
    shapes = [(spec.sizes[k] + 1, spec.sizes[k + 1]) for k in range(spec.n_layers)]
    stacked = [np.zeros(shape) for shape in shapes]  # host
    for s, (a, b) in enumerate(samples):
        weight = (b - a) / n
        for j, block in enumerate(blocks):
            for k, span in enumerate(block):
                if span is not None:
                    stacked[k][span[0] : span[1]] += weight * results[s, j][k]
    return [backend.from_host(rows, dtype=backend.dtype) for rows in stacked]
