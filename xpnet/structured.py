"""Structure-aware numerical gradient of a dense network of any depth.

Rules of this module:

* The network is ``a_l = z_l @ W_l + b_l`` for layers ``l = 0 .. L-1``, with
  ``z_0 = x`` and ``z_{l+1} = act(a_l)``; a head (:mod:`xpnet.heads`) turns the
  last ``a`` into per-sample loss terms, and the loss is their mean.
* Every perturbed loss is a real evaluation of the network at the perturbed
  parameters; nothing is linearised. What is exploited is *where* a perturbation
  acts:

  - ``W_l[i, j] += s`` changes only column ``j`` of ``a_l``, by ``s * z_l[:, i]``;
    ``b_l[j] += s`` changes it by ``s``, so ``b_l`` is handled as the weights of an
    extra input that is always 1.
  - A sample whose input ``z_l[n, i]`` is exactly 0 (zero pixels, ReLU zeros) is
    untouched by ``W_l[i, :]``: its loss term is bit-identical in ``f(+)`` and
    ``f(-)``, so it is skipped. Likewise, below the last layer, a (sample, unit)
    whose activation does not move at all (a ReLU that stays off) is skipped.
  - Sample ``n``'s perturbed loss depends on ``i`` only through ``z_l[n, i]``:
    inputs of one sample with equal values give bit-identical results, so each
    distinct (sample, value) pair is evaluated once and shared.

  From the cached unperturbed forward pass, a perturbation is propagated through
  the layers above for the affected samples only: one unit's activation, then
  each layer above as "cached pre-activation + change of its inputs @ W" (the
  cached part of an unchanged input cancels exactly), then the head. Below the
  last layer the head is evaluated one class at a time (temporaries do not grow
  with the class count); perturbations of the last layer move one score column.
* ``mode="central"`` uses steps ``+h`` and ``-h``; ``mode="complex"`` uses one step
  ``i*h`` and ``Im L / h`` (the complex step), in the matching complex dtype.
* Work is split into chunks whose intermediates fit ``max_bytes``. On the host
  the default budget keeps them in cache; on a GPU chunks are large. A chunk that
  runs out of memory is retried as two halves (only that chunk: the cached
  forward pass and finished chunks are kept). NumPy may run chunks on a thread
  pool (``n_threads``).
* Weight decay is not seen here: its central difference is exact per coordinate
  and is added by the network (:meth:`xpnet.MultiLayerNet.numerical_gradient`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from array_api_compat import array_namespace
from array_api_compat import device as device_of

from .backend import is_numpy, to_numpy
from .device import out_of_memory_errors
from .dtypes import dtype_info
from .functions import ACTIVATIONS
from .gradient import itemsize
from .heads import Head, HeadCache, get_head

__all__ = [
    "structured_gradient",
    "HOST_BYTES",
    "DEEP_HOST_BYTES",
    "HOST_TOTAL_BYTES",
    "host_bytes",
]

#: Default chunk budget on host backends: temporaries that stay in L2 cache
#: (larger host temporaries measured 2-3x slower per element).
HOST_BYTES = 2**20
#: The same for networks with two hidden layers or more: their chunks carry a whole
#: layer per (sample, unit), and 1 MiB chunks measured 3x slower (Python overhead
#: per chunk) than 8 MiB ones on the 784-100-100-10 net. Sigmoid nets: 8 MiB
#: (16 MiB measured 10% slower); ReLU nets, whose chunks shrink to the units
#: that move: 16 MiB (8 MiB measured 15-35% slower; docs/benchmarks.md).
DEEP_HOST_BYTES = {"sigmoid": 8 * 2**20, "relu": 16 * 2**20}


#: Default bound on the extra memory of one structured gradient on the host
#: (``max_bytes``); chunks stay at the cache-sized budgets above within it. The
#: Keras net's batch of 128 fits in one block (several measured ~30% slower).
HOST_TOTAL_BYTES = 256 * 2**20
# stored loss differences beyond this many chunk budgets measured no faster
_STORAGE = 64


def host_bytes(n_layers: int, activation: str) -> int:
    """Default host chunk budget for a network of ``n_layers`` affine layers."""
    return HOST_BYTES if n_layers <= 2 else DEEP_HOST_BYTES[activation]


# live intermediates of a chunk's (steps, pairs, hidden) shape, with slack
_TEMPORARIES = 6


@dataclass(frozen=True)
class _Context:
    """What every layer's pass needs: namespace, activation, head and steps."""

    xp: object
    act: object
    head: Head
    steps: object  # (S,) the perturbation steps, in the working dtype
    central: bool
    scale: float  # 1 / (2hN) or 1 / (hN)
    skip_still: bool  # an activation that can stay exactly still (ReLU)
    oom: tuple  # the backend's out-of-memory exception types
    storage_items: int  # loss differences a hidden layer may hold at once

    def split_on_oom(self, compute, lo, hi):
        """``compute(lo, hi)``; a chunk that runs out of memory is computed as its
        two halves instead (same arithmetic), down to single items. Only the
        failing chunk is retried: the cached forward pass and the chunks done
        so far are kept."""
        try:
            return compute(lo, hi)
        except self.oom:
            if hi - lo <= 1:
                raise
            mid = (lo + hi) // 2
            halves = [self.split_on_oom(compute, lo, mid), self.split_on_oom(compute, mid, hi)]
            return self.xp.concat(halves, axis=0)

    def combine(self, loss):
        """Perturbed losses (S, ...) -> their contribution to the gradient."""
        xp = self.xp
        diff = loss[0, ...] - loss[1, ...] if self.central else xp.imag(loss[0, ...])
        return diff * self.scale


@dataclass(frozen=True)
class _Forward:
    """The cached, unperturbed forward pass."""

    a: list  # a_l, (N, H_l) for every layer
    z: list  # z_l, (N, H_{l-1}); z[0] is x
    weights: list  # W_l
    work_weights: list  # W_l in the working dtype (complex for the complex step)
    head: HeadCache
    targets: object  # labels (N,) or (N, C), as the head takes them
    # above the perturbed layer, pre-activations are carried as ``sign * a`` and
    # weights as ``sign * W`` (sign -1 for sigmoid: 1 / (1 + exp(m)) needs no
    # negation pass), each with a few passes fewer per element
    carried: list  # sign * a_l (sigmoid: clipped to [-700, 700], as sigmoid clips)
    carried_weights: list  # sign * W_l, working dtype
    activate: object  # activation of a carried pre-activation


def structured_gradient(
    x,
    targets,
    layers,
    *,
    activation="sigmoid",
    output="softmax",
    h=1e-4,
    mode="central",
    max_bytes=HOST_TOTAL_BYTES,
    n_threads=None,
    chunk_bytes=None,
    rows=None,
):
    """Numerical gradient of the mean loss of a dense network, by structure.

    Parameters
    ----------
    x : array, shape (N, D), real floating
    targets : array
        Validated targets of the head: ``(N,)`` integer labels for ``softmax``,
        ``(N, C)`` floats in ``x``'s dtype for ``sigmoid``/``identity``.
    layers : list of (W, b)
        ``W_l (H_{l-1}, H_l)``, ``b_l (H_l,)``; same namespace, device and dtype
        as ``x``. One pair is a linear model; two are the book's two-layer net.
    activation : {"sigmoid", "relu"}
    output : {"softmax", "sigmoid", "identity"}
    h : float
        Step: central differences use ``+-h``, the complex step ``i*h``.
    mode : {"central", "complex"}
    max_bytes : int
        Bound on the extra memory of the whole gradient, beyond ``x`` and one
        copy of it: samples are processed in blocks whose index arrays, stored
        loss differences, cached forward pass and chunks fit in it (the loss is
        a mean, so block gradients add).
    chunk_bytes : int, optional
        Budget of one chunk's intermediates; default ``max_bytes // 8``, at most
        ``max_bytes // 2``.
    n_threads : int, optional
        Chunks evaluated at once on NumPy (default 1: on the 2-core machine of
        ``docs/benchmarks.md`` threads measured slower, as each chunk's small
        ufunc calls contend for the GIL). Ignored on other backends.
    rows : list, optional
        A block of parameters only (what one task of a sharded gradient computes):
        per layer ``None`` (skip it) or ``(r0, r1)``, rows of the stacked
        ``[W_l; b_l]`` (``b_l`` is row ``H_{l-1}``). The perturbations of
        different rows are independent, so blocks computed apart equal the whole.

    Returns
    -------
    list of (dW, db)
        Same shapes, dtype and device as ``layers``. With ``rows``: per layer
        ``None`` or the ``(r1 - r0, H_l)`` block of ``[dW_l; db_l]``.

    Raises
    ------
    TypeError
        ``mode="complex"`` on a backend without complex dtypes.
    """
    xp = array_namespace(x, targets, *(a for pair in layers for a in pair))
    if mode not in ("central", "complex"):
        raise ValueError(f"mode must be 'central' or 'complex', got {mode!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not known; expected {sorted(ACTIVATIONS)}")
    head = get_head(output)
    n_threads = 1 if n_threads is None else int(n_threads)
    if n_threads < 1:
        raise ValueError(f"n_threads must be a positive int, got {n_threads}")
    if not is_numpy(xp):
        n_threads = 1  # device backends queue work on one stream anyway
    chunk_bytes = max_bytes // 8 if chunk_bytes is None else min(chunk_bytes, max_bytes // 2)
    chunk_bytes = max(1, chunk_bytes)
    block_bytes = max(1, max_bytes - chunk_bytes)
    sizes = [layers[0][0].shape[0], *(W.shape[1] for W, _ in layers)]
    total = None
    for start, stop, storage in _sample_blocks(xp, x, sizes, block_bytes):
        part = _gradient(
            x[start:stop, ...],
            targets[start:stop, ...],
            layers,
            activation,
            head,
            h,
            mode,
            chunk_bytes,
            n_threads,
            x.shape[0],
            storage,
            rows,
        )
        # the loss is a mean over samples: block contributions add
        total = part if total is None else _add(total, part)
    return total


def _add(a, b):
    """Sum of two gradients of the same structure (pairs, arrays or None)."""
    if a is None:
        return None
    if isinstance(a, (list, tuple)):
        return type(a)(_add(u, v) for u, v in zip(a, b, strict=True))
    return a + b


# bytes per (input, sample) pair while a layer is planned: its feature, sample,
# value and group indices and the sorts that find distinct pairs
_PAIR_BYTES = 80


def _sample_blocks(xp, x, sizes, block_bytes):
    """Consecutive sample ranges ``(start, stop, storage_items)`` whose planning
    structures (pairs, stored loss differences, cached forward pass, a copy of
    their inputs) fit ``block_bytes``: one transfer of the per-sample counts of
    non-zero inputs. Hidden layers above the first are counted dense."""
    n = x.shape[0]
    nonzero = to_numpy(xp.count_nonzero(x, axis=1)).astype(float)  # host
    item = dtype_info(xp, x.dtype).itemsize
    # per sample: a layer's pairs (non-zero inputs + the bias's) and their stored
    # differences (one per unit of the next layer), the largest layer counting
    widths = [nonzero + 1.0] + [float(h + 1) for h in sizes[1:-1]]
    planning = nonzero * 0.0  # host
    for pairs, width in zip(widths, sizes[1:], strict=True):
        planning = planning.clip(min=pairs * (_PAIR_BYTES + item * width))  # host: a max
    per_sample = planning + item * (4 * sum(sizes[1:]) + sizes[0] + 1)
    cumulative = per_sample.cumsum()  # host
    storage = max(1, int(block_bytes // item))  # each block may hold this many differences
    blocks, start = [], 0
    while start < n:
        base = cumulative[start - 1] if start else 0.0
        # cumulative is non-decreasing: every sample before start counts too
        stop = int((cumulative - base <= block_bytes).sum())
        stop = max(stop, start + 1)
        blocks.append((start, stop, storage))
        start = stop
    return blocks


def _gradient(
    x,
    targets,
    layers,
    activation,
    head,
    h,
    mode,
    max_bytes,
    n_threads,
    n_total,
    storage_items,
    rows=None,
):
    xp = array_namespace(x)
    act = ACTIVATIONS[activation].function
    real = x.dtype
    dev = device_of(x)
    n_samples = x.shape[0]
    if mode == "central":
        steps = xp.asarray([h, -h], dtype=real, device=dev)
        work = real
        scale = 1.0 / (2 * h * n_total)
    else:
        work = dtype_info(xp, real).complex(xp)
        try:
            if work is None:
                raise TypeError(f"{dtype_info(xp, real).complex_name} is missing")
            steps = xp.asarray([1j * h], dtype=work, device=dev)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"method='complex' needs complex dtypes on this backend: {exc}"
            ) from exc
        scale = 1.0 / (h * n_total)
    ctx = _Context(
        xp,
        act,
        head,
        steps,
        mode == "central",
        scale,
        activation == "relu",
        out_of_memory_errors(xp),
        storage_items,
    )

    z, a = [x], []
    for index, (W, b) in enumerate(layers):
        a.append(z[-1] @ W + b)
        if index < len(layers) - 1:
            z.append(act(a[-1]))
    weights = [W for W, _ in layers]
    # matmuls with complex operands need complex weights (torch does not promote)
    work_weights = weights if work == real else [xp.astype(W, work) for W in weights]
    if activation == "sigmoid":
        carried = [-xp.clip(v, min=-700.0, max=700.0) for v in a]
        carried_weights = [-W for W in work_weights]
        activate = _sigmoid_of_negative
    else:
        carried, carried_weights, activate = a, work_weights, act
    cache = _Forward(
        a,
        z,
        weights,
        work_weights,
        head.cache(a[-1], targets),
        targets,
        carried,
        carried_weights,
        activate,
    )

    budget_items = max(1, max_bytes // (itemsize(xp, work) * _TEMPORARIES))
    ones = xp.ones((n_samples, 1), dtype=real, device=dev)
    grads = []
    for index in range(len(layers)):
        span = None if rows is None else rows[index]
        if rows is not None and span is None:
            grads.append(None)
            continue
        z_aug = xp.concat([z[index], ones], axis=1)
        if span is not None:
            # a column of z_aug perturbs one row of [W; b], independently of the rest
            z_aug = z_aug[:, span[0] : span[1]]
        if index == len(layers) - 1:
            block = _output_layer(z_aug, cache, budget_items, n_threads, ctx)
        else:
            block = _hidden_layer(index, z_aug, cache, budget_items, n_threads, ctx)
        grads.append(block if rows is not None else (block[:-1, :], block[-1, :]))
    return grads


def _sigmoid_of_negative(m):
    """``sigmoid(-m)`` for ``m`` in [-701, 701]: one exp, no clip, no negation."""
    xp = array_namespace(m)
    e = xp.exp(m)
    e += 1.0  # in place: one temporary fewer (JAX rebinds, same result)
    return 1.0 / e


def _contiguous(xp, a):
    """Row-major copy of ``a`` (flattening a transposed view forces the copy)."""
    return xp.reshape(xp.reshape(a, (-1,)), a.shape)


def _run(tasks, n_threads):
    if n_threads > 1 and len(tasks) > 1:
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            return list(pool.map(lambda task: task(), tasks))
    return [task() for task in tasks]


def _hidden_layer(index, z_aug, cache, budget_items, n_threads, ctx):
    """Gradient rows for ``[W_l; b_l]`` of a layer below the last, (H_{l-1} + 1, H_l)."""
    xp = ctx.xp
    n_samples, n_features = z_aug.shape
    n_hidden = cache.a[index].shape[1]
    n_steps = ctx.steps.shape[0]
    dev = device_of(z_aug)
    x_t = xp.permute_dims(z_aug, (1, 0))  # (D+1, N): pairs come out grouped by feature
    nonzero = x_t != 0
    feature, sample = xp.nonzero(nonzero)
    value = xp.take(xp.reshape(x_t, (-1,)), feature * n_samples + sample)
    count = xp.count_nonzero(x_t, axis=1)
    deep = index < len(cache.a) - 2
    series = False
    if deep and cache.activate is _sigmoid_of_negative:
        # in the plan's one transfer: a bound on the moves of the layer above,
        # |dz * W| <= |step| * max|input| * max|W| / 4 (sigmoid' <= 1/4), which
        # decides whether its exp may be taken by series (_deep_losses)
        bound = (
            xp.max(xp.abs(ctx.steps))
            * xp.max(xp.abs(z_aug))
            * xp.max(xp.abs(cache.weights[index + 1]))
            / 4.0
        )
        both = to_numpy(xp.concat([xp.astype(count, bound.dtype), xp.reshape(bound, (1,))]))
        counts = [int(c) for c in both[:-1]]
        series = bool(both[-1] <= _series_bound(xp, z_aug.dtype))
    else:
        counts = [int(c) for c in to_numpy(count)]
    if not sum(counts):
        # only inputs that are 0 for every sample (a block of rows without the
        # bias's, as a sharded gradient asks for): no perturbation moves the loss
        return xp.zeros((n_features, n_hidden), dtype=cache.a[index].dtype, device=dev)
    group, u_sample, u_value = _distinct(xp, sample, value, dev)
    n_unique = u_sample.shape[0]

    if not deep:
        losses, width = _row_losses(index, cache, u_sample, u_value, ctx), 1
    else:
        losses = _deep_losses(index, cache, u_sample, u_value, ctx, series)
        width = max(a.shape[1] for a in cache.a[index + 1 :])

    # plan: hidden blocks whose (distinct pairs x hidden) losses fit in storage;
    # chunks of distinct pairs within the budget; blocks of whole features (each
    # gradient row is summed in one block) whose pairs and 0/1 matrix fit too
    storage = min(ctx.storage_items, _STORAGE * budget_items)
    hidden_block = min(n_hidden, max(1, storage // max(n_unique, 1)))
    unique_chunk = max(1, budget_items // (n_steps * hidden_block * width))
    widest = max(counts)
    pair_target = max(widest, budget_items // hidden_block)
    offsets = [0]
    for c in counts:
        offsets.append(offsets[-1] + c)
    groups, f0 = [], 0
    while f0 < n_features:
        f1 = f0 + 1
        while (
            f1 < n_features
            and offsets[f1 + 1] - offsets[f0] <= pair_target
            and (f1 + 1 - f0) * (offsets[f1 + 1] - offsets[f0]) <= budget_items
        ):
            f1 += 1
        groups.append((f0, f1))
        f0 = f1

    def sums(f0, f1, differences):
        p0, p1 = offsets[f0], offsets[f1]
        if p0 == p1:
            return xp.zeros((f1 - f0, differences.shape[1]), dtype=z_aug.dtype, device=dev)
        diff = xp.take(differences, group[p0:p1], axis=0)  # (P, J): each pair's own
        rows = xp.arange(f0, f1, dtype=feature.dtype, device=dev)
        seg = xp.astype(feature[None, p0:p1] == rows[:, None], diff.dtype)  # (F, P)
        return seg @ diff

    blocks = []
    for j0 in range(0, n_hidden, hidden_block):
        j1 = min(n_hidden, j0 + hidden_block)
        chunks = [
            (
                lambda u0=u0, j0=j0, j1=j1: ctx.split_on_oom(
                    lambda a, b: losses(a, b, j0, j1), u0, min(n_unique, u0 + unique_chunk)
                )
            )
            for u0 in range(0, n_unique, unique_chunk)
        ]
        differences = xp.concat(_run(chunks, n_threads), axis=0)  # (U, J)
        parts = [
            (
                lambda f0=f0, f1=f1, d=differences: ctx.split_on_oom(
                    lambda a, b: sums(a, b, d), f0, f1
                )
            )
            for f0, f1 in groups
        ]
        blocks.append(xp.concat(_run(parts, n_threads), axis=0))
    return xp.concat(blocks, axis=1)


def _distinct(xp, sample, value, dev):
    """Distinct (sample, value) pairs, and each pair's index among them.

    ``W_l[i, j] += s`` moves ``a_l[n, j]`` by ``s * z_l[n, i]``: inputs of one
    sample with equal values give bit-identical perturbed losses (real images
    repeat values: 8-bit pixels), so each distinct one is evaluated once.
    """
    order = xp.argsort(value, stable=True)
    order = xp.take(order, xp.argsort(xp.take(sample, order), stable=True))  # by (n, v)
    n_sorted, v_sorted = xp.take(sample, order), xp.take(value, order)
    new = (n_sorted[1:] != n_sorted[:-1]) | (v_sorted[1:] != v_sorted[:-1])
    first = xp.concat([xp.ones(1, dtype=xp.bool, device=dev), new])
    index_sorted = xp.cumulative_sum(xp.astype(first, xp.int64)) - 1
    group = xp.take(index_sorted, xp.argsort(order))  # argsort inverts the permutation
    (starts,) = xp.nonzero(first)
    return group, xp.take(n_sorted, starts), xp.take(v_sorted, starts)


def _unit_changes(index, cache, u_sample, u_value, ctx, u0, u1, j0, j1):
    """How units j0:j1 of layer ``index`` move for distinct pairs u0:u1: (S, U, J)."""
    xp = ctx.xp
    n_idx = u_sample[u0:u1]
    a = xp.take(cache.a[index][:, j0:j1], n_idx, axis=0)  # (U, J)
    z = xp.take(cache.z[index + 1][:, j0:j1], n_idx, axis=0)
    step = ctx.steps[:, None, None]
    return n_idx, ctx.act(a[None, ...] + step * u_value[None, u0:u1, None]) - z[None, ...]


def _row_losses(index, cache, u_sample, u_value, ctx):
    """``losses(u0, u1, j0, j1)`` for the last hidden layer: combined perturbed-loss
    terms, (U, J), of pairs u0:u1 whose input moves units j0:j1; the score row of
    a sample moves by ``dz * W_last[j, :]``."""
    xp = ctx.xp
    W_t = _contiguous(xp, xp.permute_dims(cache.weights[index + 1], (1, 0)))  # (C, H)

    def losses(u0, u1, j0, j1):
        n_idx, dz = _unit_changes(index, cache, u_sample, u_value, ctx, u0, u1, j0, j1)
        return ctx.combine(ctx.head.row_losses(cache.head, n_idx, dz, W_t[:, j0:j1]))

    return losses


def _series_bound(xp, dtype) -> float:
    """Largest ``|t|`` for which ``1 + t + t^2/2 + t^3/6 + t^4/24`` is ``exp(t)`` to
    rounding: the first term left out, ``t^5/120``, stays below ``eps/16``; a
    further factor 10 of margin on the bound it is compared with."""
    eps = dtype_info(xp, dtype).eps
    return (120.0 * eps / 16.0) ** 0.2 / 10.0


def _exp_series(t):
    """``exp(t)`` for ``|t|`` within :func:`_series_bound`, by Horner (one new
    array, the rest in place): a few multiply-adds per element instead of an
    ``exp`` (unvectorised for float64 on AVX2 builds of NumPy)."""
    p = t * (1.0 / 24.0)
    p += 1.0 / 6.0
    p *= t
    p += 0.5
    p *= t
    p += 1.0
    p *= t
    p += 1.0
    return p


def _deep_losses(index, cache, u_sample, u_value, ctx, series=False):
    """``losses(u0, u1, j0, j1)`` for a layer with hidden layers above it: each
    moved unit's change goes through every layer above, for its sample only.

    ``series`` (sigmoid, with every move ``t = dz * W`` of the layer above provably
    tiny): that layer's sigmoids are ``1 / (1 + exp(m) * exp(t))`` with ``exp(m)``
    of the cached forward pass and ``exp(t)`` by its series, exact to rounding
    (the series' first omitted term is below ``eps / 16``): every perturbed loss
    is still the network's, evaluated without one ``exp`` per element."""
    xp = ctx.xp
    n_layers = len(cache.a)

    W_last_t = _contiguous(xp, xp.permute_dims(cache.work_weights[-1], (1, 0)))  # (C, H)
    exp_carried = xp.exp(cache.carried[index + 1]) if series else None

    def first_layer(t, n):
        """Activations of layer ``index + 1`` moved by ``t`` (carried weights
        times unit changes) for samples ``n``."""
        if series:
            p = _exp_series(t)
            p *= _rows(xp, exp_carried, n)
            p += 1.0
            return 1.0 / p
        t += _rows(xp, cache.carried[index + 1], n)
        return cache.activate(t)

    def propagate(z_moved, n):
        """Loss terms, shape ``z_moved.shape[:-1]``, for moved activations
        ``z_moved`` (a new array) of layer ``index + 1``, rows of samples ``n`` (an
        index array broadcasting to them)."""
        dz_above = z_moved
        dz_above -= _rows(xp, cache.z[index + 2], n)
        for above in range(index + 2, n_layers - 1):
            a = _rows(xp, cache.carried[above], n) + dz_above @ cache.carried_weights[above]
            dz_above = cache.activate(a)
            dz_above -= _rows(xp, cache.z[above + 1], n)
        # the scores, class-major (C, M), so the head sums over classes on rows
        shape = dz_above.shape[:-1]
        flat = xp.reshape(dz_above, (-1, dz_above.shape[-1]))  # (M, H)
        n_flat = xp.reshape(xp.broadcast_to(n[None, ...], shape), (-1,))
        scores = xp.take(cache.head.by_class, n_flat, axis=1) + W_last_t @ xp.permute_dims(
            flat, (1, 0)
        )
        return xp.reshape(ctx.head.class_losses(cache.head, scores, n_flat), shape)

    def losses(u0, u1, j0, j1):
        n_idx, dz = _unit_changes(index, cache, u_sample, u_value, ctx, u0, u1, j0, j1)
        w = cache.carried_weights[index + 1][j0:j1, :]  # (J, H)
        if not ctx.skip_still:
            # (S, U, J, H) by broadcasting: sample rows (U, 1, H), unit rows (J, H)
            n = n_idx[:, None]
            return ctx.combine(propagate(first_layer(dz[..., None] * w, n), n))
        # a unit that does not move at all leaves the sample's loss bit-identical:
        # only the moved (sample, unit) pairs are propagated
        n_steps, n_u, n_j = dz.shape
        flat = xp.reshape(dz, (n_steps, n_u * n_j))
        moved = xp.any(flat != 0, axis=0)
        (pair,) = xp.nonzero(moved)
        flat = xp.take(flat, pair, axis=1)
        n = xp.take(n_idx, pair // n_j)
        moves = flat[..., None] * xp.take(w, pair % n_j, axis=0)
        combined = ctx.combine(propagate(first_layer(moves, n), n))  # (K,)
        # back to (U * J) by gathering: the pairs that stayed still get 0
        position = xp.cumulative_sum(xp.astype(moved, xp.int64)) - 1
        padded = xp.concat([combined, xp.zeros(1, dtype=combined.dtype, device=device_of(dz))])
        combined = xp.take(padded, xp.where(moved, position, pair.shape[0]))
        return xp.reshape(combined, (n_u, n_j))

    return losses


def _rows(xp, a, n):
    """Rows ``n`` of ``a`` (any index shape), with a leading axis for the steps."""
    return xp.reshape(xp.take(a, xp.reshape(n, (-1,)), axis=0), (1, *n.shape, *a.shape[1:]))


def _output_layer(z_aug, cache, budget_items, n_threads, ctx):
    """Gradient rows for ``[W_last; b_last]``, (H + 1, C): column k of the scores
    moves by ``step * z[:, j]``."""
    xp = ctx.xp
    n_samples, n_units = z_aug.shape
    n_classes = cache.head.by_class.shape[0]
    n_steps = ctx.steps.shape[0]
    per_unit = n_steps * n_classes * n_samples
    unit_block = max(1, budget_items // per_unit)

    def block(j0, j1):
        delta = ctx.steps[:, None, None] * xp.permute_dims(z_aug[:, j0:j1], (1, 0))[None, ...]
        delta = delta[:, :, None, :]  # (S, J, 1, N): the change of column k of the scores
        return xp.sum(ctx.combine(ctx.head.column_losses(cache.head, delta)), axis=-1)  # (J, K)

    tasks = [
        (lambda j0=j0: ctx.split_on_oom(block, j0, min(n_units, j0 + unit_block)))
        for j0 in range(0, n_units, unit_block)
    ]
    return xp.concat(_run(tasks, n_threads), axis=0)
