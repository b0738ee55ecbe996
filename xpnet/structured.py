"""Structure-aware numerical gradient of a dense network of any depth.

Rules of this module:

* The network is :mod:`xpnet.model`'s: ``a_l = z_l @ W_l + b_l``, ``z_{l+1} =
  act(a_l)``, a head on the last ``a``. The definition of the numerical gradient
  is unchanged: for every parameter, ``(L(p + h e_k) - L(p - h e_k)) / 2h`` (or
  the complex step ``Im L(p + i h e_k) / h``), every perturbed loss a real
  evaluation of the network at the perturbed parameters. Nothing comes from
  backprop. What is exploited is where a perturbation acts, and identities that
  are exact in real arithmetic:

  - ``W_l[i, j] += s`` moves only ``a_l[n, j]``, by ``s * z_l[n, i]`` (the bias is
    the weight of an input that is always 1). Equal inputs of one sample move
    the same (evaluated once): :mod:`xpnet.plan` finds the distinct (sample,
    value) pairs; inputs equal to 0 share one pair of value 0, whose losses are
    bit-identical to the unmoved ones (its results are exactly 0).
  - The moved unit's own activation is evaluated for each pair: with ``s =
    sigmoid(a)`` and ``q = e^u - 1``, ``sigmoid(a + u) - s = s (1 - s) q / (1 +
    s q)`` (no cancellation, no exp per unit); a ReLU is linear between its
    kinks: its move is exactly ``u`` (on) or 0 (off) for every pair whose step
    cannot reach its kink (the others are evaluated directly; on the host), and
    one that no step reaches from its off side is skipped.
  - Above it, the change ``dz`` of that one activation moves the score row along
    a function of ``dz`` alone. With a head right above it is exactly linear
    (``dz * W[j, :]``); through ReLU layers it is too, as long as no ReLU above
    crosses its kink (every pair and unit whose move might reach a kink, ``|dz
    v| >= |a|``, is evaluated directly instead); through sigmoid layers it is a power
    series. The head then needs only the series' first ``K`` coefficients, per
    (sample, unit), formed once with matrix products (:mod:`xpnet.series`):
    ``K`` is the smallest count whose left-out remainder is provably below
    ``eps / 16`` of the quantity, from bounds computed on the data; where no
    ``K <= 8`` is enough, every item is evaluated directly (the forward pass of
    the layers above, :func:`xpnet.model.forward`).
  - The central difference of each item is formed as the difference of its two
    perturbed losses (softmax: ``log(q-) - log(q+)`` as ``log(q- / q+)``, or as
    ``2 atanh(y)`` by its series where the plan bounds ``y``).
* Weight decay is not seen here: its central difference is exact per coordinate
  (``lambda * W``) and is added by :mod:`xpnet.numerical`.
* Planning is apart from computing: sample blocks are planned once
  (:mod:`xpnet.budget`), each block's layers after what the plan needs of its
  forward pass comes to the host in one transfer (:mod:`xpnet.plan`). This
  module runs the blocks; :mod:`xpnet.block` gathers those facts and computes
  the last layer's rows; a layer below the last is :mod:`xpnet.hidden`'s.
* Work is split into chunks whose intermediates fit ``chunk_bytes`` (cache-sized
  on the host, large on a GPU), a chunk that runs out of memory retried as two
  halves; on NumPy each of ``n_threads`` takes a run of consecutive sample
  blocks, in helper processes or on threads (:mod:`xpnet.work`, :mod:`xpnet.procs`);
  with one helper the caller's run is the larger by its hand-off lag. On exactly
  two cores a net with one sigmoid hidden layer is one block that both
  processes compute (:mod:`xpnet.shared_block`): the same bits as one thread.
"""

from __future__ import annotations

from dataclasses import replace

from array_api_compat import array_namespace

from . import budget, checks, model, procs, series, shared_block
from .backend import to_numpy
from .block import block_rows, working_layers
from .device import tune_host_allocator
from .work import added_in_order, make_context

__all__ = ["structured_gradient", "HOST_TOTAL_BYTES", "HOST_CHUNK_BYTES"]

#: Default bound on the extra memory of one structured gradient on the host.
HOST_TOTAL_BYTES = 256 * 2**20
#: Largest sample block on the host (per-sample byte estimate): the Keras net took
#: 128 / 101 / 112 ms in blocks of at most 32 / 128 / 256 MiB (docs/benchmarks.md).
HOST_BLOCK_BYTES = 128 * 2**20
#: Default chunk budget on the host: temporaries that stay in a core's L2 cache.
HOST_CHUNK_BYTES = 4 * 2**20

_THREAD_SHARE_BYTES = 4 * 2**20  # the least work (per-sample estimate) worth a thread
# the caller's run's lead over one helper's (its hand-off lag; none with more
# helpers): 2.5 MiB ran faster than 5 and than none (docs/numerical-gradient.md)
_HANDOFF_BYTES = 5 * 2**19


def structured_gradient(
    spec: model.ModelSpec,
    layers,
    x,
    t,
    *,
    h: float = 1e-4,
    mode: str = "central",
    max_bytes: int = HOST_TOTAL_BYTES,
    chunk_bytes: int | None = None,
    n_threads: int | None = None,
    rows=None,
):
    """Numerical gradient of the mean loss (without decay) of a dense network.

    Parameters
    ----------
    spec : ModelSpec
    layers : list of (W, b)
        ``W_l (H_{l-1}, H_l)``, ``b_l (H_l,)``, in ``x``'s namespace, device, dtype.
    x : array (N, D), real floating
    t : array
        Validated targets: ``(N,)`` int64 labels (softmax), else ``(N, C)``.
    h : float
        Step: ``+-h`` (central) or ``i h`` (complex).
    mode : {"central", "complex"}
    max_bytes : int
        Bound on the extra memory of the whole gradient (sample blocks fit in it).
    chunk_bytes : int, optional
        One chunk's intermediates; default ``max_bytes // 8``, at most half a thread's share.
    n_threads : int, optional
        Threads on NumPy (default :func:`xpnet.device.host_threads`); ignored
        by other backends, which queue their work on one device.
    rows : list, optional
        Per layer ``None`` (skip it) or ``(r0, r1)``, rows of the stacked
        ``[W_l; b_l]`` (``b_l`` is row ``H_{l-1}``): a sharded gradient's task.

    Returns
    -------
    list
        Per layer the stacked ``[dW_l; db_l]`` (or its rows ``r0:r1``; None where
        ``rows`` skips it), in ``x``'s namespace, device and dtype.

    Raises
    ------
    TypeError
        ``mode="complex"`` on a backend without complex dtypes.
    """
    xp = array_namespace(x, t, *(a for pair in layers for a in pair))
    checks.one_of("mode", mode, ("central", "complex"))
    if n_threads is not None:
        checks.positive_int("n_threads", n_threads)
    spans = _spans(spec, rows)
    chunk = max_bytes // 8 if chunk_bytes is None else chunk_bytes
    ctx = make_context(xp, spec, x, h, mode, max(1, chunk), n_threads)
    share = max_bytes // ctx.n_threads  # a thread holds one block and one chunk
    if ctx.chunk_bytes > share // 2:  # a larger chunk left blocks of one sample (16 cores)
        ctx = replace(ctx, chunk_bytes=max(1, share // 2))
    return _run_blocks(ctx, layers, x, t, spans, max_bytes)


def _run_blocks(ctx, layers, x, t, spans, max_bytes):
    """The gradient as the sum of its sample blocks' (a run of consecutive blocks
    per thread, in helper processes or threads; :func:`xpnet.budget.thread_shares`),
    added in order whatever finishes first, and scaled once."""
    if ctx.host:  # else freed chunks go back to the kernel and fault in again
        tune_host_allocator()  # on one thread too: the book's net 1.4-1.6x faster
    x_host = to_numpy(x)  # host: the plan reads the inputs (one transfer from a device)
    if (
        ctx.n_threads == 2
        and shared_block.suits(ctx, spans)
        and _one_block(ctx, x_host, spans, max_bytes)
    ):
        # one block on two processes: no block's work done twice, the loops'
        # pieces taken as each side frees up (xpnet.shared_block)
        with procs.team() as link:
            if link is not None:
                rows = shared_block.gradient_rows(replace(ctx, n_threads=1), link, layers, x, t)
                return [r * ctx.scale for r in rows]
    shares = _thread_shares(ctx, x_host, spans, max_bytes)
    common = (replace(ctx, n_threads=1), layers, spans)
    host_rows = None if ctx.host else x_host  # on NumPy x_host is x: not sent twice
    parts = [(*_rows(ctx, (x, t, host_rows), a, b), bounds) for a, b, bounds in shares]
    # a helper's rows are added as they lie in its shared memory (each before the
    # next is asked for; 0.04-0.10 ms less than a copy first), to the caller's own
    total = added_in_order(ctx.map(_share_task, common, parts, views=True))
    for rows in total:  # new arrays: the sums, or the caller's own rows
        if rows is not None:
            rows *= ctx.scale
    return total


def _share_task(ctx, layers, spans, x, t, x_host, bounds):
    """One run of sample blocks' gradient rows (its blocks' ``bounds`` in order),
    from what a helper process receives."""
    work_layers = working_layers(ctx, layers)
    x_host = to_numpy(x) if x_host is None else x_host  # host
    blocks = (_rows(ctx, (x, t, x_host), a, b) for a, b in bounds)
    return added_in_order(block_rows(ctx, layers, work_layers, *block, spans) for block in blocks)


def _rows(ctx, arrays, a, b):
    """Samples ``a:b`` of each of ``arrays`` (:meth:`xpnet.work.Context.part`:
    the arrays themselves where that is all of them; None stays None)."""
    return tuple(None if array is None else ctx.part(array, a, b) for array in arrays)


def _thread_shares(ctx, x_host, spans, max_bytes):  # host
    """The gradient's sample blocks, each within its thread's share of ``max_bytes`` (every
    thread holds one block and one chunk at a time), in runs per thread
    (:func:`xpnet.budget.thread_shares`) whose inputs, copied for a helper, fit one too."""
    limit = max(1, max_bytes // ctx.n_threads - ctx.chunk_bytes)
    if ctx.host:  # larger blocks ran no faster on the host (HOST_BLOCK_BYTES)
        limit = min(limit, HOST_BLOCK_BYTES)
    item = ctx.itemsize if ctx.central else ctx.itemsize // 2  # the real dtype's
    planned = (x_host, spans, ctx.spec.sizes, item, series.MAX_TERMS, limit)
    lead = _HANDOFF_BYTES if ctx.host and ctx.n_threads == 2 else 0
    blocks = budget.gradient_blocks(*planned, ctx.n_threads, _THREAD_SHARE_BYTES, lead)
    row_bytes = x_host.shape[1] * x_host.itemsize
    return budget.thread_shares(blocks, ctx.n_threads, row_bytes=row_bytes, max_bytes=limit)


def _one_block(ctx, x_host, spans, max_bytes) -> bool:  # host
    """Whether the whole batch is worth two threads and fits one block beside a
    chunk of each process (by the bound without a sort, never below the exact
    bytes; HOST_BLOCK_BYTES, _THREAD_SHARE_BYTES)."""
    item = ctx.itemsize if ctx.central else ctx.itemsize // 2
    sizes = ctx.spec.sizes
    per_sample = budget.per_sample_bytes(x_host, spans, sizes, item, series.MAX_TERMS, exact=False)
    total = float(per_sample.sum())  # host
    limit = min(max_bytes - 2 * ctx.chunk_bytes, HOST_BLOCK_BYTES)
    return 2 * _THREAD_SHARE_BYTES <= total <= limit


def _spans(spec, rows):
    full = [(0, n + 1) for n in spec.sizes[:-1]]
    if rows is None:
        return full
    if len(rows) != len(full):
        raise ValueError(f"rows must have one entry per layer ({len(full)}), got {len(rows)}")
    return [None if r is None else (int(r[0]), int(r[1])) for r in rows]
