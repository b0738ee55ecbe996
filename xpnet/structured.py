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
  module runs the blocks, gathers those facts and computes the last layer's
  rows; a layer below the last is :mod:`xpnet.hidden`'s.
* Work is split into chunks whose intermediates fit ``chunk_bytes`` (cache-sized
  on the host, large on a GPU), a chunk that runs out of memory retried as two
  halves; on NumPy each of ``n_threads`` takes a run of consecutive sample
  blocks, in helper processes or on threads (:mod:`xpnet.work`, :mod:`xpnet.procs`);
  with one helper the caller's run is the larger by its hand-off lag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np  # host: unpacking the plan's one transfer
from array_api_compat import array_namespace
from array_api_compat import device as device_of

from . import budget, checks, model, series
from . import plan as planner
from .backend import to_numpy
from .device import tune_host_allocator
from .dtypes import same_dtype
from .heads import HeadCache
from .hidden import hidden_rows
from .work import added_in_order, make_context

__all__ = ["structured_gradient", "HOST_TOTAL_BYTES", "HOST_CHUNK_BYTES"]

#: Default bound on the extra memory of one structured gradient on the host.
HOST_TOTAL_BYTES = 256 * 2**20
#: Largest sample block on the host (per-sample byte estimate): the Keras net took
#: 128 / 101 / 112 ms in blocks of at most 32 / 128 / 256 MiB (docs/benchmarks.md).
HOST_BLOCK_BYTES = 128 * 2**20
#: Default chunk budget on the host: temporaries that stay in a core's L2 cache.
HOST_CHUNK_BYTES = 4 * 2**20

_TEMPORARIES = 6  # live temporaries per element of a chunk, with slack
# live arrays per item of a chunk of a layer below the last (measured: larger
# chunks than this budget allows fall out of L2 and run slower)
_LIVE = 5
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
    work_layers = layers
    if not ctx.central:  # complex activations need complex weights (torch does not promote)
        work_layers = [(ctx.xp.astype(W, ctx.work), ctx.xp.astype(b, ctx.work)) for W, b in layers]
    x_host = to_numpy(x) if x_host is None else x_host  # host
    blocks = (_rows(ctx, (x, t, x_host), a, b) for a, b in bounds)
    return added_in_order(_block(ctx, layers, work_layers, *block, spans) for block in blocks)


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


def _spans(spec, rows):
    full = [(0, n + 1) for n in spec.sizes[:-1]]
    if rows is None:
        return full
    if len(rows) != len(full):
        raise ValueError(f"rows must have one entry per layer ({len(full)}), got {len(rows)}")
    return [None if r is None else (int(r[0]), int(r[1])) for r in rows]


@dataclass(frozen=True)
class _Facts:
    """What the device knows of a layer below the last before the plan: its
    inputs (whose reach the host takes) and what lies above."""

    layer: int
    span: tuple
    inputs: object  # (N, F) the layer's inputs in the span, bias left out; None: on the host
    pre: object  # (N, J) or None: ReLU's pre-activations (the host finds those no step moves)
    gap: object  # (N, J) or None: the least |dz| of a unit that may reach a ReLU kink above
    moves: list | None  # series of the score change (ReLU above: exact, linear)
    bound: object  # 0-d: what |dz| multiplies to bound the score change; (J, C): see below


def _columns(z, span):
    """The columns ``span`` of ``z`` (the bias's column left out: it is 1)."""
    if span[0] == 0 and span[1] >= z.shape[1]:
        return z
    return z[:, span[0] : min(span[1], z.shape[1])]


def _augmented(xp, z, span):
    """``[z, 1]`` restricted to the columns ``span`` (the last column is the bias's)."""
    if span[1] <= z.shape[1]:
        return _columns(z, span)
    ones = xp.ones((z.shape[0], 1), dtype=z.dtype, device=device_of(z))
    return xp.concat([_columns(z, span), ones], axis=1)


def _block(ctx, layers, work_layers, x, t, x_host, spans):
    """The gradient rows of one sample block (a list like structured_gradient's)."""
    xp, spec = ctx.xp, ctx.spec
    a, z = model.forward(spec, layers, x)
    cache = spec.head.cache(a[-1], t)
    last = len(layers) - 1
    facts = {}
    for layer, span in enumerate(spans[:-1]):
        if span is not None:
            facts[layer] = _layer_facts(ctx, layers, a, z, layer, span, x_host)
    plans = _plan_layers(ctx, spec, facts, x_host, spans)
    grads = []
    for layer, span in enumerate(spans):
        if span is None:
            grads.append(None)
        elif layer == last:
            inputs = _augmented(xp, z[layer], span)
            grads.append(_output_rows(ctx, plans[layer], inputs, cache))
        else:
            grads.append(
                hidden_rows(ctx, plans[layer], facts[layer], layers, work_layers, a, z, cache)
            )
    return grads


# -- what the device computes before the plan --------------------------------------
def _lip(ctx) -> float:
    """|dz| <= lip * |u|: the sigmoid's slope is at most 1/4 on the real line (and
    at most 1 near it, where the complex step moves); ReLU's at most 1."""
    return 0.25 if (ctx.spec.activation == "sigmoid" and ctx.central) else 1.0


def _layer_facts(ctx, layers, a, z, layer, span, x_host) -> _Facts:
    xp, spec = ctx.xp, ctx.spec
    relu = spec.activation == "relu"
    above = len(layers) - 2 - layer  # hidden layers above this one
    # the inputs' reach per sample is taken on the host (from x, or the inputs sent
    # for the plan), which also compares it with the gaps to the kinks above
    inputs = None if layer == 0 else _columns(z[layer], span)
    pre = a[layer] if relu else None  # the host finds the ReLUs no step moves
    gap, moves = None, None
    if above == 0 or relu:  # the score row moves by exactly dz * V[j, :]
        if above == 0:  # the head right above: V = W, (J, C), shared by every sample
            moves = [None, layers[-1][0]]
        else:
            moves, gap = _relu_moves(ctx, layers, a, layer)
        # |dz (V_c - V_c')| <= |dz| * the largest spread of a row; the head's
        # weights (J, C) go to the host, which takes it (no reductions here)
        V = moves[1]
        bound = V if above == 0 else xp.max(xp.max(V, axis=-1) - xp.min(V, axis=-1))
    else:
        # sigmoid layers above: |x_l'| <= |dz| * beta_l' elementwise (slopes <= 1 in
        # the strip |Im| < pi/2), beta by products of |W|; the largest sets the
        # series' radius (docs/numerical-gradient.md)
        beta = xp.abs(layers[layer + 1][0])
        bound = xp.max(beta)
        for W, _ in layers[layer + 2 :]:
            beta = beta @ xp.abs(W)
            bound = xp.maximum(bound, xp.max(beta))
    return _Facts(layer, span, inputs, pre, gap, moves, bound)


def _relu_moves(ctx, layers, a, layer):
    """ReLU layers above unit ``j`` of ``layer``: while no ReLU above crosses its
    kink, the scores move by exactly ``dz * V[n, j, :]``, ``V`` the product of
    ``W`` rows masked by the active units. Also each unit's **gap**: the least
    ``|dz|`` whose move may reach a kink above, ``min |a_l'[n, k]| / |V_l'[n, j,
    k]|`` over the units ``k`` of every ReLU layer ``l'`` above (a move of
    ``|dz|`` below it crosses none), as a product with ``1 / |V|``, ``|V|``
    taken at least ``eps^2`` and ``|a|`` at most ``eps^-2``: never above the
    quotient, no division by 0, no overflow (a smaller gap only sends more
    items to the direct path; ``a = 0`` gives 0 even where ``V`` is 0)."""
    xp = ctx.xp
    n_samples, n_units = a[layer].shape
    widest = max(W.shape[1] for W, _ in layers[layer + 1 :])
    per_sample = max(1, n_units * widest * ctx.itemsize * _TEMPORARIES)
    floor = ctx.eps**2

    def chunk(n0, n1):
        v = layers[layer + 1][0]  # (J, H): the move of a_{l+1} per unit dz
        gap = None
        for k in range(layer + 1, len(layers) - 1):
            pre = a[k][n0:n1, None, :]  # (n, 1, H)
            inverse = 1.0 / xp.clip(xp.abs(v), min=floor)
            least = xp.min(xp.clip(xp.abs(pre), max=1.0 / floor) * inverse, axis=-1)  # (n, J)
            gap = least if gap is None else xp.minimum(gap, least)
            v = xp.where(pre > 0, v, xp.zeros_like(v)) @ layers[k + 1][0]
        v = xp.broadcast_to(v, (n1 - n0, *v.shape[-2:]))
        return xp.concat([v, gap[..., None]], axis=-1)

    both = ctx.chunked(n_samples, ctx.chunk_bytes // per_sample, chunk)
    return [None, both[..., :-1]], both[..., -1]


def _facts_on_host(ctx, facts, x_host) -> dict:
    """What planning needs of the layers' facts, ``{(layer, name): host array}``,
    brought over in one transfer (the first layer's from ``x_host``)."""
    xp = ctx.xp
    scalars = [(layer, "bound", f.bound) for layer, f in facts.items() if not f.bound.ndim]
    arrays = [(layer, "bound", f.bound) for layer, f in facts.items() if f.bound.ndim]
    for layer, fact in facts.items():
        if fact.inputs is not None:  # the first layer's inputs are x, already on the host
            arrays.append((layer, "inputs", fact.inputs))
        for name in ("pre", "gap"):
            if getattr(fact, name) is not None:
                arrays.append((layer, name, getattr(fact, name)))
    host: dict = {}
    layout = scalars + arrays
    if not layout:  # no layer below the last
        return host
    if len(layout) == 1:  # one transfer
        flat = to_numpy(layout[0][2]).reshape(-1)
    else:  # the scalars stacked, the arrays flat, in the network's dtype
        parts = [xp.stack([array for _, _, array in scalars])] if scalars else []
        for _, _, array in arrays:
            same = same_dtype(xp, array.dtype, ctx.real)
            parts.append(xp.reshape(array if same else xp.astype(array, ctx.real), (-1,)))
        flat = to_numpy(parts[0] if len(parts) == 1 else xp.concat(parts))
    offset = 0
    for layer, name, array in layout:
        size = math.prod(array.shape)
        host[(layer, name)] = flat[offset : offset + size].reshape(tuple(array.shape))
        offset += size
    for layer, fact in facts.items():  # the inputs with the bias's column, their reach
        if host[(layer, "bound")].ndim:  # the head's weights: the largest row spread
            host[(layer, "bound")] = np.max(np.ptp(host[(layer, "bound")], axis=-1))  # host
        columns, span = x_host, fact.span
        if layer > 0:  # the transferred columns of the span
            columns, span = host[(layer, "inputs")], (0, fact.span[1] - fact.span[0])
        host[(layer, "inputs")] = planner.input_columns(columns, span)
        reach = planner.input_reach(columns, span, ctx.h)  # host: per sample
        host[(layer, "reach")] = _lip(ctx) * float(np.max(reach, initial=0.0))  # host
        if (layer, "pre") in host:  # ReLU: the units no step moves, the kinks (the
            # units' own on the host, whose series takes no move per item: hidden)
            pre, gap = host.pop((layer, "pre")), host.pop((layer, "gap"), None)
            still, kink = planner.relu_kinks(pre, gap, reach, ctx.h, own=ctx.host)
            host[(layer, "still")], host[(layer, "kink")] = still, kink
    return host


def _plan_layers(ctx, spec, facts, x_host, spans):
    """Bring what planning needs to the host in one transfer; plan every layer."""
    host = _facts_on_host(ctx, facts, x_host)
    plans = {}
    n_classes = spec.sizes[-1]
    step = ctx.itemsize * ctx.n_steps  # one working element per step
    for layer, fact in facts.items():
        reach, bound = float(host[(layer, "reach")]), float(host[(layer, "bound")])
        terms, log_terms = _terms(ctx, spec, layer, reach * bound)
        # live arrays per item: the unit's move, the series' value and a few more
        # (a score row where the head is separable)
        series_width = _LIVE if spec.output == "softmax" else _LIVE + 3 * n_classes
        # a direct item carries a row of every layer above
        direct_width = _LIVE + 3 * sum(spec.sizes[layer + 1 :])
        plans[layer] = planner.layer_plan(
            layer,
            fact.span,
            host[(layer, "inputs")],
            spec.sizes[layer + 1],
            still=host.get((layer, "still")),
            kink=host.get((layer, "kink")),
            terms=terms,
            series_item_bytes=step * series_width,
            direct_item_bytes=step * direct_width,
            chunk_bytes=ctx.chunk_bytes,
            result_itemsize=ctx.itemsize,
            log_terms=log_terms,
        )
    last = len(spans) - 1
    if spans[last] is not None:
        n_samples = x_host.shape[0]
        plans[last] = planner.output_plan(
            last, spans[last], step * _LIVE * n_classes * n_samples, ctx.chunk_bytes
        )
    return plans


def _terms(ctx, spec, layer, rho) -> tuple:
    """Series terms for a layer (None: evaluate directly), from the largest
    ``|dz| * bound`` over the block (:mod:`xpnet.series`); and the terms of ``2
    atanh(y)`` in place of the softmax's ``log(q- / q+)`` on the host (None: the
    log; on a device it is one launch, its series several). Where the scores
    move linearly in ``dz``, every score gap moves by at most ``rho`` per step:
    ``|log(q-/q+)| <= 2 rho`` (``log q_t`` and ``log(q_t + 1e-7)`` are
    1-Lipschitz in the gaps), ``|y| = tanh(|log| / 2) <= rho``, taken as ``2
    rho`` for the rounding of ``q`` (docs/numerical-gradient.md)."""
    complex_step = not ctx.central
    softmax = spec.output == "softmax"
    if len(spec.sizes) - 3 - layer == 0 or spec.activation == "relu":  # linear in dz
        if not softmax:
            return 2, None  # the scores themselves: dz * V, nothing left out
        terms = series.terms_for_linear(rho, ctx.eps, complex_step=complex_step)
        host_log = ctx.host and ctx.central and terms is not None
        return terms, series.terms_for_atanh(2.0 * rho, ctx.eps) if host_log else None
    order = 1 if (complex_step or not softmax) else 0
    growth = 2.0 if softmax else 0.0
    return series.terms_for_cauchy(rho, ctx.eps, growth=growth, order=order), None


# -- the last layer ------------------------------------------------------------------
def _output_rows(ctx, plan, inputs, cache: HeadCache):
    """Rows ``span`` of ``[dW_L; db_L]``: score column ``k`` moves by ``step * z[n, i]``."""
    head = ctx.spec.head
    columns = inputs.T  # (I, N)

    def compute(i0, i1):
        delta = ctx.steps * ctx.part(columns, i0, i1)  # (S, I, N)
        return head.column_differences(cache, delta, ctx)

    return ctx.chunked(columns.shape[0], plan.chunk, compute)
