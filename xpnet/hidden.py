"""The rows of ``[dW_l; db_l]`` of a layer below the last: every distinct
(sample, value) pair of its inputs moves its units; what lies above is taken
as a series or evaluated directly.

Rules of this module:

* It takes a :class:`xpnet.plan.LayerPlan` (made on the host), the layer's
  facts from :mod:`xpnet.structured`, the cached forward pass and a
  :class:`xpnet.work.Context`, and computes; it plans nothing.
* Every perturbed loss is the network's at the perturbed parameters to within
  rounding (docs/numerical-gradient.md): the moved unit by an exact identity
  (:func:`moves`); the layers above either as a power series whose left-out
  remainder is provably below rounding (its terms from the plan) or, for the
  plan's direct items, as the network evaluates them
  (:func:`xpnet.model.forward`).
* Results are laid end to end ``[series (U, S) | direct (D,) | 0]`` and put in
  place per pair with the plan's position table; each input then sums its
  pair's row.
"""

from __future__ import annotations

import numpy as np  # host: the direct items' indices, from the plan
from array_api_compat import device as device_of

from . import model, series
from . import plan as planner
from .functions import ACTIVATIONS

__all__ = ["hidden_rows", "moves", "COEFFICIENT_CHUNKS"]

#: a chunk of series coefficients may take this many chunk budgets: matrix
#: products and series arithmetic run as fast in larger pieces than the
#: cache-sized chunks of the element-wise passes, with fewer operations
COEFFICIENT_CHUNKS = 4


def hidden_rows(ctx, plan, fact, layers, work_layers, a, z, cache):
    """Rows ``span`` of ``[dW_l; db_l]`` of a layer below the last: every distinct
    (sample, value) pair moves the units of its sample's series slots, the
    direct items one unit each; each input sums the results of its pair."""
    xp, spec = ctx.xp, ctx.spec
    layer = plan.layer
    dev = device_of(a[layer])
    if spec.activation == "sigmoid":
        # sigmoid clips its argument to [-700, 700]: so does this exp(-a)
        unit = (xp.exp(-xp.clip(a[layer], min=-700.0, max=700.0)), z[layer + 1] - 1.0)
    else:
        unit = (a[layer], z[layer + 1])
    n_pairs, n_units = plan.pairs.count, plan.n_units
    if n_pairs == 0:  # every input of the span is 0 for every sample: nothing moves
        n_features = plan.pairs.index.shape[1]
        return xp.zeros((n_features, n_units), dtype=ctx.real, device=dev)
    pair_sample = xp.asarray(plan.pairs.sample, device=dev)
    pair_value = xp.asarray(plan.pairs.value, dtype=ctx.real, device=dev)
    results = []
    if plan.series_width:
        slots = None if plan.series is None else xp.asarray(plan.series, device=dev)
        coefficients = _coefficients(ctx, fact, plan.terms, layers, z, cache)
        results.append(
            _series(ctx, plan, slots, unit, coefficients, pair_sample, pair_value, cache)
        )
    if plan.direct_count:
        results.append(_direct(ctx, plan, unit, work_layers, z, cache, pair_value))
    if plan.position is None:
        values = results[0]
    else:
        results = [xp.reshape(r, (-1,)) for r in results]
        flat = xp.concat([*results, xp.zeros((1,), dtype=ctx.real, device=dev)])
        position = xp.asarray(plan.position, device=dev)  # (N, J), planned on the host
        base = xp.asarray(plan.pair_base, device=dev)  # (U, 2)
        width = plan.series_width

        def gather(u0, u1):
            at = xp.take(position, pair_sample[u0:u1], axis=0)  # (P, J)
            where = at + xp.where(at < width, base[u0:u1, 0:1], base[u0:u1, 1:2])
            where = xp.where(at < 0, plan.zero, where)
            return xp.take(flat, xp.reshape(where, (-1,)))

        per_chunk = max(1, ctx.chunk_bytes // max(1, 2 * n_units * ctx.itemsize))
        values = xp.reshape(ctx.chunked(n_pairs, per_chunk, gather), (n_pairs, n_units))
    # every input (n, i) sums its pair's row; inputs equal to 0 take the zero row
    by_pair = xp.concat([values, xp.zeros((1, n_units), dtype=ctx.real, device=dev)], axis=0)
    inputs = xp.asarray(plan.pairs.index, device=dev)  # (N, F)
    n_samples, n_features = inputs.shape
    per_feature = max(1, ctx.chunk_bytes // max(1, n_samples * n_units * ctx.itemsize))

    def sums(f0, f1):
        gathered = xp.take(by_pair, xp.reshape(inputs[:, f0:f1], (-1,)), axis=0)
        return xp.sum(xp.reshape(gathered, (n_samples, f1 - f0, n_units)), axis=0)

    return ctx.chunked(n_features, per_feature, sums)


def _slotted(xp, array, slots, axis):
    """``array`` with its unit axis ``axis`` (length J) taken at each sample's
    ``slots`` (N, S); the sample axis is the one before it. None: as it is."""
    if slots is None:
        return array
    shape = [1] * array.ndim
    shape[axis - 1], shape[axis] = slots.shape
    target = list(array.shape)
    target[axis] = slots.shape[1]
    index = xp.broadcast_to(xp.reshape(slots, tuple(shape)), tuple(target))
    return xp.take_along_axis(array, index, axis=axis)


def moves(ctx, first, second, value):
    """``act(a + u) - act(a)``, (S, P, W), for pairs of input ``value`` (P, 1) and
    the (P, W) units' ``first``/``second`` (sigmoid: ``exp(-a)``, ``sigmoid(a) - 1``;
    ReLU: ``a``, ``relu(a)``)."""
    xp = ctx.xp
    if ctx.spec.activation == "sigmoid":
        # sigmoid(a + u) - sigmoid(a) = (1 - sigmoid(a)) (1 - e^-u) / (1 + e^-a e^-u):
        # exact, without cancellation and without an exp per unit; ``second`` is
        # ``sigmoid(a) - 1``, so that dz = second * (e^-u - 1) / (...)
        down = ctx.down * value  # (S, P, 1): -u
        e_u = xp.exp(down)
        dz = second * (xp.expm1(down) if ctx.central else e_u - 1.0)
        denominator = first * e_u
        denominator += 1.0
        dz /= denominator
        return dz
    return ACTIVATIONS["relu"].function(first + ctx.steps * value) - second


def _series(ctx, plan, slots, unit, coefficients, pair_sample, pair_value, cache):
    """Combined differences of every pair and series slot through the head's
    series in ``dz``, (U, S)."""
    xp = ctx.xp
    head = ctx.spec.head
    first, second = (_slotted(xp, array, slots, 1) for array in unit)
    coefficients = _slotted(xp, coefficients, slots, 2)

    def compute(u0, u1):
        n = pair_sample[u0:u1]
        dz = moves(
            ctx, xp.take(first, n, axis=0), xp.take(second, n, axis=0), pair_value[u0:u1, None]
        )
        picked = [xp.take(coefficients[m, ...], n, axis=0) for m in range(coefficients.shape[0])]

        def per_sample(array):
            return xp.take(array, n, axis=0)[:, None, ...]

        return head.series_differences(cache, picked, dz, per_sample, ctx)

    return ctx.chunked(plan.pairs.count, plan.series_chunk, compute)


def _direct(ctx, plan, unit, work_layers, z, cache, pair_value):
    """Combined differences of the direct items, (D,): each item's moved row of
    activations through the layers above (:func:`xpnet.model.forward`) and the
    head, as the network evaluates them."""
    xp, spec = ctx.xp, ctx.spec
    layer = plan.layer
    dev = device_of(pair_value)
    n_units = plan.n_units
    # host: each item's sample, and its (sample, unit) cell of the (N, J) arrays
    sample, pairs = plan.pairs.sample[plan.direct_pair], plan.direct_pair
    items = xp.asarray(
        np.stack([sample, sample * n_units + plan.direct_unit, plan.direct_unit, pairs]),  # host
        device=dev,
    )
    first, second = (xp.reshape(array, (-1,)) for array in unit)
    positions = xp.arange(n_units, device=dev)

    def compute(i0, i1):
        n, cell, j, pair = xp.unstack(items[:, i0:i1])
        dz = moves(
            ctx,
            xp.take(first, cell)[:, None],
            xp.take(second, cell)[:, None],
            xp.take(pair_value, pair)[:, None],
        )  # (S, P, 1)
        moved_unit = xp.astype(j[:, None] == positions, ctx.real)  # (P, J)
        moved = xp.take(z[layer + 1], n, axis=0) + dz * moved_unit  # (S, P, J)
        scores = model.forward(spec, work_layers, moved, start=layer + 1)[0][-1]
        return ctx.loss(spec.head.losses(scores, xp.take(cache.target, n, axis=0)))

    return ctx.chunked(plan.direct_count, plan.direct_chunk, compute)


def _coefficients(ctx, fact, terms, layers, z, cache):
    """The head's series coefficients per (sample, unit), by sample chunks."""
    xp, spec = ctx.xp, ctx.spec
    layer = fact.layer
    n_samples = z[0].shape[0]
    head = spec.head
    hidden = list(range(layer + 1, len(layers) - 1))
    if fact.moves is not None or not hidden:  # exactly linear
        moves = fact.moves

        def chunk(n0, n1):
            rows = slice(n0, n1)
            picked = [None] + [None if m is None else _rows_of(m, rows) for m in moves[1:]]
            return xp.stack(_filled(xp, head.series_coefficients(cache, rows, picked, terms)))

    else:  # sigmoid layers above: the series of each through the next
        n_units = layers[layer][0].shape[1]
        widest = max(W.shape[1] for W, _ in layers[layer + 1 :])
        per_sample = n_units * widest * ctx.itemsize * terms * terms

        def chunk(n0, n1):
            rows = slice(n0, n1)
            moves = [None, layers[layer + 1][0][None, ...]]  # a_{l+1} moves by dz * W[j, :]
            for k in hidden:
                s = z[k + 1][rows, None, :]  # sigmoid(a_k), (n, 1, H)
                changes = series.compose(series.sigmoid_taylor(s, terms), moves, terms)
                moves = [None] + [None if c is None else c @ layers[k + 1][0] for c in changes[1:]]
            return xp.stack(_filled(xp, head.series_coefficients(cache, rows, moves, terms)))

        return _chunk_samples(ctx, n_samples, per_sample, chunk)
    per_sample = layers[layer][0].shape[1] * spec.sizes[-1] * ctx.itemsize * terms * 2
    return _chunk_samples(ctx, n_samples, per_sample, chunk)


def _rows_of(array, rows):
    """Rows of a per-sample array; an array shared by every sample (leading 1) as is."""
    return array if array.shape[0] == 1 else array[rows, ...]


def _filled(xp, coefficients):
    """Series coefficients with the zeros (None) made arrays, so they stack."""
    like = next(c for c in coefficients if c is not None)
    return [xp.zeros_like(like) if c is None else c for c in coefficients]


def _chunk_samples(ctx, n_samples, per_sample, chunk):
    """``chunk(n0, n1)`` (K, n, ...) over sample ranges within the chunk budget,
    joined along the samples."""
    xp = ctx.xp
    # matrix products and series arithmetic: larger pieces than the cache-sized
    # chunks of the element-wise passes run as fast and cost fewer operations
    size = max(1, COEFFICIENT_CHUNKS * ctx.chunk_bytes // max(1, per_sample))
    parts = [chunk(n0, n1) for n0, n1 in planner.chunks(n_samples, size)]
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)
