"""Structure-aware numerical gradient of the two-layer network.

Rules of this module:

* Every perturbed loss is a real evaluation of the network at the perturbed
  parameters; nothing is linearised. What is exploited is *where* a perturbation
  acts:

  - ``W1[i, j] += s`` changes only column ``j`` of ``a1 = x @ W1 + b1``, by
    ``s * x[:, i]``; ``b1[j] += s`` changes it by ``s``. So ``b1`` is handled as
    the weights of an extra input that is always 1.
  - ``W2[j, k] += s`` changes only column ``k`` of ``a2 = z1 @ W2 + b2``, by
    ``s * z1[:, j]``; ``b2`` is the weight of an extra hidden unit that is 1.
  - A sample whose input ``x[n, i]`` is exactly 0 is untouched by ``W1[i, :]``:
    its loss term cancels exactly in ``f(+) - f(-)``, so it is skipped.
  - Sample ``n``'s perturbed loss depends on ``i`` only through ``x[n, i]``:
    inputs of one sample with equal values give bit-identical results, so each
    distinct (sample, value) pair is evaluated once and shared (8-bit images
    repeat values; the always-1 input of ``b1`` shares with pixels equal to 1).

  With the unperturbed forward pass cached, a perturbation of ``W1[i, j]`` costs,
  per affected sample, one activation and one softmax over the ``C`` classes
  (``C`` exponentials) instead of a whole forward pass.
* The loss is the book's mean over samples of ``-log(y[n, t_n] + 1e-7)``, so
  ``f(+) - f(-) = sum_n (L_n(+) - L_n(-)) / N`` over the affected samples. The
  softmax is shifted by the unperturbed row maximum (a shift cancels exactly in
  the softmax; the perturbation is far too small to overflow).
* ``mode="central"`` uses steps ``+h`` and ``-h``; ``mode="complex"`` uses one step
  ``i*h`` and ``Im L / h`` (the complex step), in the matching complex dtype.
* Work is split into chunks whose intermediates fit ``max_bytes``; the softmax
  over classes is summed one class at a time so a chunk's temporaries do not grow
  with the class count. On the host the default budget keeps them in cache; on a
  GPU chunks are large. NumPy may run chunks on a thread pool (``n_threads``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from array_api_compat import array_namespace
from array_api_compat import device as device_of

from .backend import is_numpy, out_of_memory_errors, to_numpy
from .functions import LOG_EPS, relu, sigmoid
from .gradient import itemsize

__all__ = ["structured_gradient", "ACTIVATIONS", "HOST_BYTES"]

#: Default chunk budget on host backends: temporaries that stay in L2 cache
#: (larger host temporaries measured 2-3x slower per element).
HOST_BYTES = 2**20

ACTIVATIONS = {"sigmoid": sigmoid, "relu": relu}

# live intermediates of a chunk's (steps, pairs, hidden) shape, with slack
_TEMPORARIES = 6
# the (distinct pairs x hidden) loss differences may take this many budgets
_STORAGE = 64


def structured_gradient(
    x,
    labels,
    params,
    *,
    activation="sigmoid",
    h=1e-4,
    mode="central",
    max_bytes=HOST_BYTES,
    n_threads=None,
):
    """Numerical gradient of the book's two-layer network, by structure.

    Parameters
    ----------
    x : array, shape (N, D), real floating
    labels : array, shape (N,), integer class indices
    params : dict
        ``W1 (D, H)``, ``b1 (H,)``, ``W2 (H, C)``, ``b2 (C,)``, same namespace,
        device and dtype as ``x``.
    activation : {"sigmoid", "relu"}
    h : float
        Step: central differences use ``+-h``, the complex step ``i*h``.
    mode : {"central", "complex"}
    max_bytes : int
        Budget for one chunk's largest intermediates.
    n_threads : int, optional
        Chunks evaluated at once on NumPy (default 1: on the 2-core machine of
        ``docs/benchmarks.md`` threads measured slower, as each chunk's small
        ufunc calls contend for the GIL). Ignored on other backends.

    Returns
    -------
    dict
        ``W1 b1 W2 b2`` gradients, same shapes, dtype and device as ``params``.

    Raises
    ------
    TypeError
        ``mode="complex"`` on a backend without complex dtypes.
    """
    xp = array_namespace(x, labels, *params.values())
    if mode not in ("central", "complex"):
        raise ValueError(f"mode must be 'central' or 'complex', got {mode!r}")
    n_threads = 1 if n_threads is None else int(n_threads)
    if n_threads < 1:
        raise ValueError(f"n_threads must be a positive int, got {n_threads}")
    if not is_numpy(xp):
        n_threads = 1  # device backends queue work on one stream anyway
    oom = out_of_memory_errors(xp)
    while True:
        try:
            return _gradient(x, labels, params, activation, h, mode, max_bytes, n_threads, xp)
        except oom:
            if max_bytes <= 2**16:
                raise
            max_bytes //= 2  # same arithmetic, smaller chunks


def _gradient(x, labels, params, activation, h, mode, max_bytes, n_threads, xp):
    act = ACTIVATIONS[activation]
    W1, b1, W2, b2 = (params[k] for k in ("W1", "b1", "W2", "b2"))
    real = x.dtype
    dev = device_of(x)
    n_samples = x.shape[0]
    if mode == "central":
        steps = xp.asarray([h, -h], dtype=real, device=dev)
        work = real
        scale = 1.0 / (2 * h * n_samples)
    else:
        work = xp.complex128 if real == xp.float64 else xp.complex64
        try:
            steps = xp.asarray([1j * h], dtype=work, device=dev)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"method='complex' needs complex dtypes on this backend: {exc}"
            ) from exc
        scale = 1.0 / (h * n_samples)

    # the cached, unperturbed forward pass
    a1 = x @ W1 + b1
    z1 = act(a1)
    a2 = z1 @ W2 + b2
    s2 = a2 - xp.max(a2, axis=1, keepdims=True)
    s2_t = xp.take_along_axis(s2, labels[:, None], axis=1)[:, 0]

    def combine(loss):
        diff = loss[0, ...] - loss[1, ...] if mode == "central" else xp.imag(loss[0, ...])
        return diff * scale

    ctx = dict(xp=xp, act=act, steps=steps, combine=combine)
    budget_items = max(1, max_bytes // (itemsize(xp, work) * _TEMPORARIES))
    ones = xp.ones((n_samples, 1), dtype=real, device=dev)
    first = _first_layer(
        xp.concat([x, ones], axis=1), a1, z1, s2, s2_t, W2, labels, budget_items, n_threads, ctx
    )
    second = _second_layer(
        xp.concat([z1, ones], axis=1), s2, s2_t, labels, budget_items, n_threads, ctx
    )
    d = W1.shape[0]
    return {"W1": first[:d, :], "b1": first[d, :], "W2": second[:-1, :], "b2": second[-1, :]}


def _contiguous(xp, a):
    """Row-major copy of ``a`` (flattening a transposed view forces the copy)."""
    return xp.reshape(xp.reshape(a, (-1,)), a.shape)


def _run(tasks, n_threads):
    if n_threads > 1 and len(tasks) > 1:
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            return list(pool.map(lambda task: task(), tasks))
    return [task() for task in tasks]


def _first_layer(x_aug, a1, z1, s2, s2_t, W2, labels, budget_items, n_threads, ctx):
    """Gradient rows for ``[W1; b1]``, shape (D + 1, H)."""
    xp = ctx["xp"]
    n_samples, n_features = x_aug.shape
    n_hidden = W2.shape[0]
    n_steps = ctx["steps"].shape[0]
    dev = device_of(x_aug)
    x_t = xp.permute_dims(x_aug, (1, 0))  # (D+1, N): pairs come out grouped by feature
    nonzero = x_t != 0
    feature, sample = xp.nonzero(nonzero)
    value = xp.take(xp.reshape(x_t, (-1,)), feature * n_samples + sample)
    counts = [int(c) for c in to_numpy(xp.sum(xp.astype(nonzero, xp.int64), axis=1))]
    group, u_sample, u_value = _distinct(xp, sample, value, dev)
    n_unique = u_sample.shape[0]

    # plan: hidden blocks whose (distinct pairs x hidden) losses fit in storage;
    # chunks of distinct pairs within the budget; blocks of whole features (each
    # gradient row is summed in one block) whose pairs and 0/1 matrix fit too
    hidden_block = min(n_hidden, max(1, _STORAGE * budget_items // n_unique))
    unique_chunk = max(1, budget_items // (n_steps * hidden_block))
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

    losses = _loss_differences(a1, z1, s2, s2_t, W2, labels, u_sample, u_value, ctx)

    def sums(f0, f1, differences):
        p0, p1 = offsets[f0], offsets[f1]
        if p0 == p1:
            return xp.zeros((f1 - f0, differences.shape[1]), dtype=x_aug.dtype, device=dev)
        diff = xp.take(differences, group[p0:p1], axis=0)  # (P, J): each pair's own
        rows = xp.arange(f0, f1, dtype=feature.dtype, device=dev)
        seg = xp.astype(feature[None, p0:p1] == rows[:, None], diff.dtype)  # (F, P)
        return seg @ diff

    blocks = []
    for j0 in range(0, n_hidden, hidden_block):
        j1 = min(n_hidden, j0 + hidden_block)
        chunks = [
            (lambda u0=u0, j0=j0, j1=j1: losses(u0, min(n_unique, u0 + unique_chunk), j0, j1))
            for u0 in range(0, n_unique, unique_chunk)
        ]
        differences = xp.concat(_run(chunks, n_threads), axis=0)  # (U, J)
        parts = [(lambda f0=f0, f1=f1, d=differences: sums(f0, f1, d)) for f0, f1 in groups]
        blocks.append(xp.concat(_run(parts, n_threads), axis=0))
    return xp.concat(blocks, axis=1)


def _distinct(xp, sample, value, dev):
    """Distinct (sample, value) pairs, and each pair's index among them.

    ``W1[i, j] += s`` moves ``a1[n, j]`` by ``s * x[n, i]``: inputs of one sample
    with equal values give bit-identical perturbed losses (real images repeat
    values: 8-bit pixels), so each distinct one is evaluated once.
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


def _loss_differences(a1, z1, s2, s2_t, W2, labels, u_sample, u_value, ctx):
    """``losses(u0, u1, j0, j1)``: combined perturbed-loss terms, shape (U, J), of
    samples ``u_sample[u0:u1]`` whose input ``u_value`` moves hidden units j0:j1."""
    xp, act, combine = ctx["xp"], ctx["act"], ctx["combine"]
    n_classes = W2.shape[1]
    step = ctx["steps"][:, None, None]
    W2_t = _contiguous(xp, xp.permute_dims(W2, (1, 0)))  # (C, H)
    s2_by_class = _contiguous(xp, xp.permute_dims(s2, (1, 0)))  # (C, N)
    u_label = xp.take(labels, u_sample)

    def losses(u0, u1, j0, j1):
        n_idx = u_sample[u0:u1]
        a = xp.take(a1[:, j0:j1], n_idx, axis=0)  # (U, J)
        z = xp.take(z1[:, j0:j1], n_idx, axis=0)
        dz = act(a[None, ...] + step * u_value[None, u0:u1, None]) - z[None, ...]  # (S, U, J)
        w = W2_t[:, j0:j1]  # (C, J)
        s = xp.take(s2_by_class, n_idx, axis=1)  # (C, U): rows contiguous
        # the softmax's sum over classes, one class at a time: every temporary is
        # (S, U, J), which keeps a chunk in cache however many classes there are
        total = xp.exp(s[0, None, :, None] + dz * w[0, :])
        for c in range(1, n_classes):
            total = total + xp.exp(s[c, None, :, None] + dz * w[c, :])
        w_t = xp.take(w, u_label[u0:u1], axis=0)  # (U, J)
        score_t = xp.take(s2_t, n_idx)[None, :, None] + dz * w_t[None, ...]
        loss = -xp.log(xp.exp(score_t) / total + LOG_EPS)
        return combine(loss)

    return losses


def _second_layer(z_aug, s2, s2_t, labels, budget_items, n_threads, ctx):
    """Gradient rows for ``[W2; b2]``, shape (H + 1, C)."""
    xp, steps, combine = ctx["xp"], ctx["steps"], ctx["combine"]
    n_samples, n_units = z_aug.shape
    n_classes = s2.shape[1]
    n_steps = steps.shape[0]
    dev = device_of(s2)
    eye = xp.eye(n_classes, dtype=s2.dtype, device=dev)  # (K, C): which class moves
    hits = xp.permute_dims(xp.take(eye, labels, axis=0), (1, 0))  # (K, N): k == t_n
    per_unit = n_steps * n_classes * n_samples
    unit_block = max(1, budget_items // per_unit)

    def block(j0, j1):
        delta = steps[:, None, None] * xp.permute_dims(z_aug[:, j0:j1], (1, 0))[None, ...]
        delta = delta[:, :, None, :]  # (S, J, 1, N): the change of column k of a2
        total = xp.exp(s2[:, 0] + delta * eye[None, None, :, 0, None])
        for c in range(1, n_classes):
            total = total + xp.exp(s2[:, c] + delta * eye[None, None, :, c, None])
        score_t = s2_t + delta * hits  # (S, J, K, N)
        loss = -xp.log(xp.exp(score_t) / total + LOG_EPS)
        return xp.sum(combine(loss), axis=-1)  # (J, K)

    tasks = [
        (lambda j0=j0: block(j0, min(n_units, j0 + unit_block)))
        for j0 in range(0, n_units, unit_block)
    ]
    return xp.concat(_run(tasks, n_threads), axis=0)
