"""The rows of ``[dW_l; db_l]`` of a layer below the last: every distinct
(sample, value) pair of its inputs moves its units; what lies above is taken
as a series or evaluated directly.

Rules of this module:

* It takes a :class:`xpnet.plan.LayerPlan` (made on the host), the layer's
  facts from :mod:`xpnet.structured`, the cached forward pass and a
  :class:`xpnet.work.Context`, and computes; it plans nothing.
* Every perturbed loss is the network's at the perturbed parameters to within
  rounding (docs/numerical-gradient.md): the moved unit by an exact identity
  (:func:`moves`; a sigmoid unit under a series as ``s (1 - s) r``, the
  series taken in ``r``; a ReLU under a series by exactly the step, or not at
  all where it is off, see :func:`_series`); the layers above either as a
  power series whose left-out remainder is provably below rounding (its terms
  from the plan) or, for the
  plan's direct items, as the network evaluates them
  (:func:`xpnet.model.forward`) from the move of the affine map right above,
  which is linear (``dz * W_{l+1}[j, :]``).
* Each pair's results lie side by side, ``[series slots | direct slots | 0]``,
  and are put in place per unit with its sample's layout from the plan; each
  input then adds its pair's row, in the plan's chunks of features (inputs
  equal to 0, whose pair's row is exactly 0, skipped where there are several
  chunks).
"""

from __future__ import annotations

import bisect
from dataclasses import replace

import numpy as np  # host: the direct items' indices, from the plan
from array_api_compat import device as device_of

from . import model, series
from . import plan as planner
from .functions import ACTIVATIONS
from .team import TeamBroken
from .work import central_steps

__all__ = ["hidden_rows", "moves", "series_coefficients", "COEFFICIENT_CHUNKS"]

#: a chunk of series coefficients may take this many chunk budgets: matrix
#: products and series arithmetic run as fast in larger pieces than the
#: cache-sized chunks of the element-wise passes, with fewer operations
COEFFICIENT_CHUNKS = 4


def hidden_rows(ctx, plan, fact, layers, work_layers, a, z, cache, coefficients=None):
    """Rows ``span`` of ``[dW_l; db_l]`` of a layer below the last: every distinct
    (sample, value) pair moves the units of its sample's series slots, the
    direct items one unit each; each input sums the results of its pair.
    ``coefficients``: a sigmoid layer's :func:`series_coefficients`, where they
    were computed before the plan came (else computed here)."""
    xp, spec = ctx.xp, ctx.spec
    layer = plan.layer
    dev = device_of(a[layer])
    relu = spec.activation == "relu"
    slope = None
    if not relu:
        s = z[layer + 1]
        slope = s * (1.0 - s)
    pair_sample = xp.asarray(plan.pairs.sample, device=dev)
    inverse = not relu and ctx.central  # the sigmoid's series takes 1 / q (see _series)
    pair_value = None
    if plan.direct_count or not inverse:
        pair_value = xp.asarray(plan.pairs.value[:, None], dtype=ctx.real, device=dev)  # (U, 1)
    results = []
    if plan.series_width:
        slots = None if plan.series is None else xp.asarray(plan.series, device=dev)
        if relu and ctx.host:
            # below every kink (on the host the plan sends the items that may reach
            # their unit's own kink to the direct path too) a unit that is on moves
            # by exactly the step, one that is off not at all: the series in dz =
            # step * value, its terms 0 where off (no move per item: on a device,
            # whose cost is launches, each item's move is taken as it is instead)
            on = xp.astype(a[layer] > 0, ctx.real)
            coefficients = _coefficients(ctx, fact, plan.terms, layers, z, cache, on)
            # a central difference's steps are +-h: the first alone, (U, 1) (the
            # series at both signs at once: Keras net -11.7 ms, 29 of 30 paired)
            steps = ctx.steps[0, ...] if ctx.central else ctx.steps  # else (S, U, 1)
            rows, pair_move = None, steps * pair_value
        else:
            if coefficients is None:
                coefficients = _coefficients(ctx, fact, plan.terms, layers, z, cache, slope)
            rows = xp.stack([a[layer], z[layer + 1]]) if relu else z[layer + 1][None, ...]
            pair_move = pair_value
            if inverse:  # the pairs' 1 / q, (S, U, 1), from the host
                pair_move = _inverse_moves(ctx.h, plan.pairs.value, ctx.itemsize)  # host
                pair_move = xp.asarray(pair_move, dtype=ctx.real, device=dev)
        results.append(_series(ctx, plan, slots, rows, coefficients, pair_sample, pair_move, cache))
    if plan.direct_count:
        # (R, N, J): what moves takes of each unit (ReLU: a and relu(a); sigmoid:
        # s (1 - s) and s)
        unit = xp.stack([a[layer], z[layer + 1]] if relu else [slope, z[layer + 1]])
        results.append(_direct(ctx, plan, unit, work_layers, a, cache, pair_value))
    if plan.layout is None:
        values = results[0]
    else:
        values = _in_place(ctx, plan, results, pair_sample, dev)
    # the pieces are let go before the sums, whose chunks then reuse their memory
    # (the Keras net: 2.3 ms less per gradient, faster in 20 of 30 paired calls)
    del results
    sums = plan.sums if plan.sums is not None else _later_sums(ctx, plan)
    return _input_sums(ctx, sums, values, plan.n_units)


def _later_sums(ctx, plan):
    """The sums of a plan made without them: a team's caller gets them from its
    helper, which plans them while the loops before them run (:mod:`xpnet.team`);
    planned here if the team broke."""
    if ctx.team is not None:
        try:
            return ctx.team.receive()
        except TeamBroken:
            pass  # planned here
    return planner.layer_sums(plan.pairs, plan.n_units, ctx.itemsize, ctx.chunk_bytes)


def _in_place(ctx, plan, results, pair_sample, dev):
    """Every pair's row of results per unit, (U, J): its series slots, direct
    slots and a 0 side by side, taken at its sample's layout (planned on the host)."""
    xp = ctx.xp
    n_pairs, n_units = plan.pairs.count, plan.n_units
    rows = [results[0]] if plan.series_width else []
    if plan.direct_width:  # [direct (D,) | safe series (E,) | 0] -> each pair's (U, T)
        direct = [results[-1]] if plan.direct_count else []
        if plan.safe is not None:  # items no kink reaches: their series results
            flat = xp.reshape(results[0], (-1,))
            direct.append(xp.take(flat, xp.asarray(plan.safe, device=dev)))
        direct.append(xp.zeros((1,), dtype=ctx.real, device=dev))
        slots = xp.take(xp.concat(direct), xp.asarray(plan.direct_slots, device=dev))
        rows.append(xp.reshape(slots, (n_pairs, plan.direct_width)))
    rows.append(xp.zeros((n_pairs, 1), dtype=ctx.real, device=dev))
    table = xp.concat(rows, axis=1)  # (U, S + T + 1)
    if ctx.host:
        # NumPy: one column gather per sample (its pairs share its layout), written
        # in place: a gather along two axes at once measured ~10x slower, gathers
        # concatenated afterwards ~1.6x (and twice the memory). mode="clip": the
        # planned indices are in range, and "raise" buffers the output
        values = np.empty((n_pairs, n_units), dtype=table.dtype)  # host: NumPy here
        starts = plan.pairs.sample_starts
        for n, (u0, u1) in enumerate(zip(starts[:-1], starts[1:], strict=True)):
            if u1 > u0:
                np.take(  # host
                    table[u0:u1], plan.layout[n], axis=1, out=values[u0:u1], mode="clip"
                )
        return values
    layout = xp.asarray(plan.layout, device=dev)

    def gather(u0, u1):
        where = xp.take(layout, ctx.part(pair_sample, u0, u1), axis=0)  # (u, J)
        return xp.take_along_axis(ctx.part(table, u0, u1), where, axis=1)

    per_chunk = max(1, ctx.chunk_bytes // max(1, 2 * n_units * ctx.itemsize))
    return ctx.chunked(n_pairs, per_chunk, gather)


def _input_sums(ctx, sums, values, n_units):
    """Row ``i`` of the gradient: the rows of ``values`` (U, J) of feature ``i``'s
    inputs, summed over the samples, chunk by chunk (:class:`xpnet.plan.InputSums`)."""
    xp = ctx.xp
    dev = device_of(values)
    index = xp.asarray(sums.index, device=dev)  # planned on the host
    starts = [lo for lo, _, _, _ in sums.chunks]
    # NumPy adds rows fastest as a product with a row of ones (its sum over an
    # axis goes one row at a time, or strided); other backends sum as fast
    ones = None
    if ctx.host and sums.chunks:
        widest = max(width for _, _, width, _ in sums.chunks)
        ones = xp.ones((1, widest), dtype=values.dtype, device=dev)

    def chunk_sums(lo, hi):  # features lo:hi of one chunk (or of a half of one)
        lo_c, hi_c, width, offset = sums.chunks[bisect.bisect_right(starts, lo) - 1]
        where = ctx.part(index, offset, offset + (hi_c - lo_c) * width)  # (width, hi_c - lo_c)
        if (lo, hi) != (lo_c, hi_c):  # a half of a chunk: its features' inputs
            where = xp.reshape(
                xp.reshape(where, (width, hi_c - lo_c))[:, lo - lo_c : hi - lo_c], (-1,)
            )
        gathered = xp.take(values, where, axis=0)  # the k-th inputs of each feature side by side
        if ones is None:
            return xp.sum(xp.reshape(gathered, (width, hi - lo, n_units)), axis=0)
        rows = xp.matmul(ones[:, :width], xp.reshape(gathered, (width, (hi - lo) * n_units)))
        return xp.reshape(rows, (hi - lo, n_units))

    rows = ctx.in_pieces([(lo, hi) for lo, hi, _, _ in sums.chunks], chunk_sums)
    if sums.inverse is None:
        return rows
    return xp.take(rows, xp.asarray(sums.inverse, device=dev), axis=0)


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
    the (P, W) units' ``first``/``second`` (sigmoid: ``s (1 - s)`` and ``s =
    sigmoid(a)``; ReLU: ``a``, ``relu(a)``). Sigmoid with ``first`` None: the
    move over ``s (1 - s)``, ``q / (1 + s q)``."""
    xp = ctx.xp
    if ctx.spec.activation == "sigmoid":
        # with e^-a = (1 - s) / s and q = e^u - 1: sigmoid(a + u) = s (1 + q) / (1 + s q),
        # so sigmoid(a + u) - s = s (1 - s) q / (1 + s q): exact, no cancellation
        # (|q| is about the step), one expm1 per pair and none per unit
        u = ctx.steps * value  # (S, P, 1)
        q = xp.expm1(u) if ctx.central else xp.exp(u) - 1.0
        below = second * q
        below += 1.0
        if first is None:
            return q / below
        dz = first * q
        dz /= below
        return dz
    return ACTIVATIONS["relu"].function(first + ctx.steps * value) - second


def _inverse_moves(h: float, values: np.ndarray, itemsize: int) -> np.ndarray:  # host
    """``1 / q``, ``q = e^u - 1`` for ``u = +-h * value`` (the steps of a central
    difference, :func:`xpnet.work.central_steps`), (S, U, 1), float64 or (``itemsize``
    4) float32: inf for a value of 0, whose move is then exactly 0 (``1 / (s +
    inf)``), and where ``1 / q`` overflows, whose move is below the smallest
    normal number (0 in the loss); 0 where ``e^u`` overflows (``r = 1 / s``,
    the limit)."""
    u = np.array(central_steps(h))[:, None, None] * values[None, :, None]  # host
    # 1 / 0 and the overflows are the infs and zeros wanted, not faults
    with np.errstate(divide="ignore", over="ignore"):  # host
        inverse = 1.0 / np.expm1(u)  # host
        return inverse.astype(np.float32) if itemsize == 4 else inverse  # host


def _series(ctx, plan, slots, unit, coefficients, pair_sample, pair_move, cache):
    """Combined differences of every pair and series slot through the head's
    series in ``dz``, (U, S). The per-(sample, unit) arrays ride in one table
    where they have one shape: one gather per chunk.

    ``unit`` None (ReLU on the host): every slot's unit moves by exactly the
    step times the pair's value, ``pair_move`` (U, 1) (its coefficients are 0
    where the unit is off); a central difference's second step moves it by
    exactly the negative, and the series is evaluated at both signs at once
    (:func:`xpnet.series.horner`). ``unit`` (2, N, J), ReLU ``a`` and
    ``relu(a)``: each item's move as it is (``pair_move``: the pairs' values (U,
    1)). ``unit`` (1, N, J), sigmoid ``s``: a sigmoid unit moves by ``dz = A r``,
    ``A = s (1 - s)`` per (sample, unit) and ``r = q / (1 + s q) = 1 / (s + 1 /
    q)`` per item, and the coefficients are the series' in ``r``
    (:func:`_coefficients`), rather than ``A`` multiplied into every item's
    move. A central difference takes ``r`` from each pair's ``1 / q``
    (``pair_move`` (S, U, 1), from the host): one operation with a per-pair
    operand per item instead of two (on NumPy each such broadcast runs at
    half the speed of an operation on whole rows); the complex step ``q /
    (1 + s q)`` from the values."""
    xp = ctx.xp
    head = ctx.spec.head
    linear = unit is None
    inverse = not linear and pair_move.ndim == 3
    table, apart = unit, coefficients
    if linear or coefficients.ndim == unit.ndim:
        table, apart = coefficients if linear else xp.concat([unit, coefficients]), None
    table = _slotted(xp, table, slots, 2)
    apart = None if apart is None else _slotted(xp, apart, slots, 2)
    # the losses' log ratio by a series where the plan bounds it (Context.negative_log)
    combine = ctx if plan.log_terms is None else replace(ctx, log_terms=plan.log_terms)

    def compute(u0, u1):
        n = ctx.part(pair_sample, u0, u1)
        rows = list(xp.unstack(xp.take(table, n, axis=1)))
        if linear:  # (S, u, 1), or (u, 1): the first of two steps +-h
            dz = ctx.part(pair_move, u0, u1, axis=pair_move.ndim - 2)
        else:
            first = rows.pop(0) if unit.shape[0] == 2 else None  # ReLU's a
            second = rows.pop(0)
            if apart is not None:
                rows = list(xp.unstack(xp.take(apart, n, axis=1)))
            if inverse:
                dz = 1.0 / (second + ctx.part(pair_move, u0, u1, axis=1))
            else:
                dz = moves(ctx, first, second, ctx.part(pair_move, u0, u1))

        def per_sample(array):
            return xp.take(array, n, axis=0)[:, None, ...]

        both_signs = linear and ctx.central  # dz for +h; -dz for -h (the same bits)
        return head.series_differences(cache, rows, dz, per_sample, combine, both_signs)

    return ctx.chunked(plan.pairs.count, plan.series_chunk, compute)


def _direct(ctx, plan, unit, work_layers, a, cache, pair_value):
    """Combined differences of the direct items, (D,): each item's moved row
    through the layers above and the head, as the network evaluates them, but
    for the affine map right above, which is linear: ``a_{l+1}`` moves by
    exactly ``dz * W_{l+1}[j, :]`` (a row of ``W`` per item instead of a matrix
    product; the ReLUs and layers above it are evaluated on the moved row)."""
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
    flat = xp.reshape(unit, (2, -1))
    above = work_layers[layer + 1][0]  # (J, H): the move of a_{l+1} per unit dz
    act = ACTIVATIONS[spec.activation].function
    last = len(work_layers) - 1

    def compute(i0, i1):
        n, cell, j, pair = xp.unstack(items[:, i0:i1])
        first, second = xp.unstack(xp.take(flat, cell, axis=1)[:, :, None])
        dz = moves(ctx, first, second, xp.take(pair_value, pair, axis=0))  # (S, P, 1)
        moved = xp.take(a[layer + 1], n, axis=0) + dz * xp.take(above, j, axis=0)  # (S, P, H)
        if layer + 1 < last:
            moved = model.forward(spec, work_layers, act(moved), start=layer + 2)[0][-1]
        return ctx.loss(spec.head.losses(moved, xp.take(cache.target, n, axis=0)))

    return ctx.chunked(plan.direct_count, plan.direct_chunk, compute)


def series_coefficients(ctx, fact, terms, layers, z, cache):
    """A sigmoid layer's series coefficients (those :func:`hidden_rows` takes),
    from its facts and the plan's ``terms`` (None: no series, None)."""
    if terms is None:
        return None
    s = z[fact.layer + 1]
    return _coefficients(ctx, fact, terms, layers, z, cache, s * (1.0 - s))


def _coefficients(ctx, fact, terms, layers, z, cache, slope=None):
    """The head's series coefficients per (sample, unit), (R, N, J, ...), by
    sample chunks: of the series in ``dz``, or with ``slope`` (N, J) in ``r``,
    ``dz = slope * r`` (the move of ``a_{l+1}`` per unit ``r`` is ``slope[n, j]
    W_{l+1}[j, :]``: the same series, its coefficient of ``dz^m`` times
    ``slope^m``)."""
    spec = ctx.spec
    layer = fact.layer
    n_samples = z[0].shape[0]
    head = spec.head
    hidden = list(range(layer + 1, len(layers) - 1))
    if fact.moves is not None or not hidden:  # exactly linear
        moves = fact.moves

        def chunk(rows):
            picked = [None] + [None if m is None else _move_rows(m, rows) for m in moves[1:]]
            scale = None if slope is None else _rows_of(slope, rows)
            return head.series_coefficients(cache, rows, picked, terms, scale)

        per_sample = layers[layer][0].shape[1] * spec.sizes[-1] * ctx.itemsize * terms * 2
    else:  # sigmoid layers above: the series of each through the next
        n_units = layers[layer][0].shape[1]
        widest = max(W.shape[1] for W, _ in layers[layer + 1 :])
        per_sample = n_units * widest * ctx.itemsize * terms * terms

        def chunk(rows):
            moves = [None, layers[layer + 1][0]]  # a_{l+1} moves by dz * W[j, :], (J, H)
            if slope is not None:  # by r * slope[n, j] W[j, :], (n, J, H)
                moves[1] = _rows_of(slope, rows)[..., None] * moves[1]
            for k in hidden:
                s = _rows_of(z[k + 1], rows)[:, None, :]  # sigmoid(a_k), (n, 1, H)
                changes = series.compose(series.sigmoid_taylor(s, terms), moves, terms)
                moves = [None] + [None if c is None else c @ layers[k + 1][0] for c in changes[1:]]
            return head.series_coefficients(cache, rows, moves, terms)

    return _chunk_samples(ctx, n_samples, per_sample, chunk)


def _rows_of(array, rows):
    """Rows ``rows`` (a slice; None: all) of a per-sample array."""
    return array if rows is None else array[rows, ...]


def _move_rows(move, rows):
    """:func:`_rows_of` of a move (n, J, C); one shared by every sample (J, C) as it is."""
    return move if move.ndim == 2 else _rows_of(move, rows)


def _chunk_samples(ctx, n_samples, per_sample, chunk):
    """``chunk(rows)`` (R, n, ...) over sample ranges within the chunk budget
    (``rows`` a slice, None for all samples at once), joined along the samples."""
    xp = ctx.xp
    # matrix products and series arithmetic: larger pieces than the cache-sized
    # chunks of the element-wise passes run as fast and cost fewer operations
    size = max(1, COEFFICIENT_CHUNKS * ctx.chunk_bytes // max(1, per_sample))
    pieces = planner.chunks(n_samples, size)
    if len(pieces) == 1:
        return chunk(None)
    return xp.concat([chunk(slice(n0, n1)) for n0, n1 in pieces], axis=1)
