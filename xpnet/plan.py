"""Host-side plans of the structured numerical gradient: what to evaluate, in
what pieces.

Rules of this module:

* Plans are plain host objects (NumPy index arrays and Python numbers), built by
  pure functions from host copies of the data, with no array library besides
  NumPy and no device: they are tested without any backend. The computation
  (:mod:`xpnet.structured`) takes a plan and device arrays and nothing else.
* A gradient is planned in two steps. Up front, once: the sample blocks, whose
  intermediates fit the memory budget (:mod:`xpnet.budget`). Then, for each
  block, after what planning needs of its forward pass has come to the host in
  one transfer: each layer's distinct (sample, value) pairs
  (:func:`xpnet.pairs.distinct_pairs`: inputs of one sample with equal values
  give bit-identical perturbed losses), which units of each sample are
  evaluated and how (:func:`series_slots`, the direct items), how each input
  adds its pair's results (:func:`input_sums`), and the chunks
  (:func:`layer_plan`, :func:`chunks`). The bias ``b_l`` is the weight of an
  extra input that is always 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np  # host: plans are host index arrays

from .pairs import Pairs, distinct_pairs

#: An item whose move reaches this share of the way to a ReLU kink (its unit's
#: own, or one above) is evaluated directly: the margin covers the rounding of
#: the gap and of the move (~1e-16).
KINK_SHARE = 0.99
# the input sums' gathered rows take half a chunk's budget: written and read
# back at once, they stay near the core (1 MiB chunks of the book's, the deep
# and the Keras nets' sums ran 14-24% faster than 4 MiB ones on the first host;
# on the second, 2 MiB ones than 1 MiB: per gradient, paired calls, the book's
# net 0.11-0.54 ms, the deep ReLU 0.44, the deep sigmoid 1.86, the Keras 3.2 less)
_SUMS_SHARE = 2

__all__ = [
    "InputSums",
    "LayerPlan",
    "OutputPlan",
    "input_sums",
    "series_slots",
    "layer_plan",
    "layer_sums",
    "output_plan",
    "chunks",
    "input_columns",
    "input_reach",
    "relu_kinks",
    "KINK_SHARE",
]


@dataclass(frozen=True)
class InputSums:
    """How every input ``(n, i)`` adds its pair's row of results into row ``i``
    of the gradient (a sum over the samples), in chunks of features. With more
    than one chunk, inputs equal to 0 (their pair's row is exactly 0) are
    skipped: each feature's inputs lie non-zero first, in sample order (the sum
    is the same), the features fewest non-zero inputs first, and a chunk sums
    as many per feature as its last feature has (at least 1).

    A chunk's pairs lie input-major, ``(w, hi - lo)``: the sum over inputs adds
    whole rows of ``(hi - lo) * J`` results (NumPy: one matrix-vector product
    per chunk; one per feature cost 0.15 ms more per book's block).

    Attributes
    ----------
    index : ndarray (K,) int64
        The pairs to sum, chunk after chunk: in a chunk ``(lo, hi, w, offset)``
        the ``k``-th input of its ``f``-th feature at ``offset + k * (hi - lo) + f``.
    chunks : list of (lo, hi, width, offset)
    inverse : ndarray (F,) int64 or None
        Where each feature's row lies among the chunks' rows; None: in order.
    """

    index: np.ndarray  # host
    chunks: list
    inverse: np.ndarray | None  # host


def input_sums(pairs: Pairs, row_bytes: int, chunk_bytes: int) -> InputSums:  # host
    """The plan of the sums over the samples (:class:`InputSums`): every chunk's
    gathered rows, ``row_bytes`` each, within ``chunk_bytes``."""
    n_samples, n_features = pairs.index.shape
    rows = max(1, chunk_bytes // max(1, row_bytes))  # gathered rows per chunk
    if n_features * n_samples <= rows or n_samples <= 1:  # one chunk, or nothing to skip
        plain = chunks(n_features, max(1, rows // max(1, n_samples)))
        laid_out = [(lo, hi, n_samples, lo * n_samples) for lo, hi in plain]
        if len(plain) == 1:  # (N, F) is input-major as it is
            return InputSums(pairs.index.reshape(-1), laid_out, None)
        parts = [pairs.index[:, lo:hi].reshape(-1) for lo, hi in plain]
        return InputSums(np.concatenate(parts), laid_out, None)  # host
    by_feature = np.ascontiguousarray(pairs.index.T)  # host (F, N)
    zero_pair = pairs.count - 1  # the pair of value 0
    nonzero = by_feature != zero_pair  # host
    counts = np.count_nonzero(nonzero, axis=1)  # host: non-zero inputs per feature
    order = np.argsort(counts, kind="stable")  # host
    widths = counts[order]  # host: rising
    # per feature, its non-zero inputs first, in sample order, then the pair of
    # value 0: boolean masks enumerate row by row, so the k-th non-zero input of
    # all lands in the k-th of the slots "first count_f of row f" (a stable
    # argsort of the mask and a gather by it took 1.6x as long)
    laid = np.full((n_features, n_samples), zero_pair, dtype=by_feature.dtype)  # host
    slots = np.arange(n_samples)[None, :] < widths[:, None]  # host
    laid[slots] = by_feature[order][nonzero[order]]
    widths = np.maximum(widths, 1)  # host
    laid_out, parts, lo, offset = [], [], 0, 0
    while lo < n_features:  # (hi - lo) features by the width of the last (widest) one
        cost = np.arange(1, n_features - lo + 1) * widths[lo:]  # host
        hi = lo + max(1, int(np.searchsorted(cost, rows, side="right")))  # host
        width = int(widths[hi - 1])
        laid_out.append((lo, hi, width, offset))
        parts.append(laid[lo:hi, :width].T.reshape(-1))  # input-major
        lo, offset = hi, offset + (hi - lo) * width
    inverse = np.empty_like(order)  # host
    inverse[order] = np.arange(n_features)  # host
    return InputSums(np.concatenate(parts), laid_out, inverse.astype(np.int64))  # host


@dataclass(frozen=True)
class LayerPlan:
    """How the rows ``span`` of ``[W_l; b_l]`` of a layer below the last are
    computed for one sample block.

    Every distinct (sample, value) pair is evaluated for the units of its
    sample's **series slots** (``series[n, s]``, padded to the largest count over
    the samples by repeating a unit; a padded slot's result is never read), and
    the **direct items** ``(direct_pair[i], direct_unit[i])`` are evaluated one by
    one (a pair and unit whose move may cross a ReLU kink above, or every moving
    unit where no series is exact). Units that no step moves are in neither. A
    sample's units that some of its pairs move to a kink take **direct slots**;
    its other pairs' results in them are their series results (``safe``).

    Attributes
    ----------
    layer : int
    span : (int, int)
        Rows of ``[W_l; b_l]`` (row ``H_{l-1}`` is the bias).
    pairs : Pairs
    n_units : int
    series : ndarray (N, S) int64 or None
        Each sample's series slots; None: every unit, in order (or no series
        path, where ``terms`` is None).
    direct_pair, direct_unit : ndarray (D,) int64
        The direct items.
    safe : ndarray (E,) int64 or None
        The series results that direct slots take (pairs that no kink reaches
        in a unit that others do), as places ``u * S + s`` in the series
        results (U, S); None: none.
    layout : ndarray (N, J) int64 or None
        Where the result of unit ``j`` lies in each pair of sample ``n``'s row of
        results ``[series slots (S) | direct slots (T) | 0]``: its series slot,
        ``S +`` its rank among the sample's direct units, or ``S + T`` (the 0)
        for a unit that stays still. None: the series results are the answer
        as they are.
    direct_slots : ndarray (U * T,) int64 or None
        Each pair's direct slots (``T`` the most direct units of a sample): its
        results in ``[direct results (D,) | safe series results (E,) | 0]``,
        padded with ``D + E`` (the 0). None: no direct slots.
    terms : int or None
        Series terms (:mod:`xpnet.series`); None: no series path.
    series_chunk, direct_chunk : int
        Pairs per chunk of the series path, items per chunk of the direct path.
    sums : InputSums or None
        How each input adds its pair's row of results (None: planned apart,
        :func:`layer_sums`; a team's caller gets them from its helper).
    log_terms : int or None
        Terms of the series that takes the place of the log of the losses'
        ratio (:meth:`xpnet.work.Context.negative_log`); None: the log.
    """

    layer: int
    span: tuple
    pairs: Pairs
    n_units: int
    series: np.ndarray | None  # host
    direct_pair: np.ndarray  # host
    direct_unit: np.ndarray  # host
    safe: np.ndarray | None  # host
    layout: np.ndarray | None  # host
    direct_slots: np.ndarray | None  # host
    terms: int | None
    series_chunk: int
    direct_chunk: int
    sums: InputSums | None
    log_terms: int | None = None

    @property
    def series_width(self) -> int:
        if self.terms is None:
            return 0
        return self.n_units if self.series is None else int(self.series.shape[1])

    @property
    def direct_count(self) -> int:
        return int(self.direct_pair.shape[0])

    @property
    def direct_width(self) -> int:
        """``T``: the direct slots of a pair."""
        return 0 if self.direct_slots is None else self.direct_slots.shape[0] // self.pairs.count


def series_slots(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # host
    """Each sample's series units as slots: ``(slots (N, S), position (N, J))``,
    ``position[n, j]`` the slot of unit ``j`` (-1 where it has none), ``S`` the
    largest count over the samples (shorter rows repeat their first unit)."""
    n_units = series.shape[1]
    order = np.argsort(~series, axis=1, kind="stable")  # host: series units first
    counts = series.sum(axis=1)  # host
    width = int(counts.max(initial=0))
    position = np.empty_like(order)  # host
    np.put_along_axis(position, order, np.arange(n_units)[None, :], axis=1)  # host
    position = np.where(series, position, -1)  # host
    slots = order[:, :width]
    if width:
        pad = np.arange(width)[None, :] >= counts[:, None]  # host
        slots = np.where(pad, order[:, :1], slots)  # host
    return slots, position


def layer_plan(
    layer: int,
    span: tuple,
    z: np.ndarray,  # host (N, F): the layer's inputs in the span (bias column included)
    n_units: int,
    *,
    still: np.ndarray | None = None,  # host
    kink: np.ndarray | None = None,  # host
    terms: int | None,
    series_item_bytes: int,
    direct_item_bytes: int,
    chunk_bytes: int,
    result_itemsize: int = 8,
    log_terms: int | None = None,
    sums: bool = True,
) -> LayerPlan:  # host
    """The plan of one layer below the last for one sample block.

    ``still`` (N, J): units that no step can move (a ReLU off by more than the
    step reaches): skipped. ``kink`` (N, J): the least input magnitude whose
    move of unit ``j`` of sample ``n`` may carry a ReLU above across its kink:
    the pairs of at least that magnitude are evaluated directly in that unit,
    the others take the series. ``terms`` None: every moving unit is evaluated
    directly. ``*_item_bytes``: what one (pair, unit) item of a chunk holds on
    each path; ``result_itemsize``: the bytes of one result; ``log_terms``: as
    :class:`LayerPlan`'s. ``sums`` False: none (planned apart, :func:`layer_sums`).
    """
    pairs = distinct_pairs(z)
    moving = np.ones((z.shape[0], n_units), dtype=bool) if still is None else ~still  # host
    direct, series = _paths(z, moving, kink, terms)
    slots, position = None, None
    if terms is None or not series.all() or direct.any():
        slots, position = series_slots(series)
    if terms is None:
        slots = None
    width = 0 if terms is None else (n_units if slots is None else int(slots.shape[1]))
    direct_pair, direct_unit = _direct_items(pairs, direct)
    layout, direct_slots = _layout(pairs, direct, position, width, len(direct_pair))
    safe = None
    if kink is not None and terms is not None and position is not None and len(direct_pair):
        items = (direct_pair, direct_unit, direct_slots, kink, position, width)
        direct_pair, direct_unit, direct_slots, safe = _safe_items(pairs, *items)
    series_pair = max(1, series_item_bytes * max(1, width))
    return LayerPlan(
        layer,
        tuple(span),
        pairs,
        n_units,
        slots,
        direct_pair.astype(np.int64),  # host
        direct_unit.astype(np.int64),  # host
        safe,
        layout,
        direct_slots,
        terms,
        max(1, chunk_bytes // series_pair),
        max(1, chunk_bytes // max(1, direct_item_bytes)),
        layer_sums(pairs, n_units, result_itemsize, chunk_bytes) if sums else None,
        log_terms,
    )


def layer_sums(pairs: Pairs, n_units: int, result_itemsize: int, chunk_bytes: int) -> InputSums:
    """A layer plan's :class:`InputSums` (:func:`layer_plan`'s arguments)."""
    return input_sums(pairs, n_units * result_itemsize, chunk_bytes // _SUMS_SHARE)


def _paths(z: np.ndarray, moving: np.ndarray, kink: np.ndarray | None, terms):  # host
    """``(direct, series)`` (N, J): the units that take direct slots and those that
    take series slots. With ``kink``, a unit takes direct slots where the
    sample's largest input reaches its kink, and keeps its series slot for the
    sample's smaller inputs, unless every input reaches it (``kink <= 0``)."""
    if terms is None:
        return moving, np.zeros_like(moving)  # host
    if kink is None:
        return np.zeros_like(moving), moving  # host
    largest = np.max(np.abs(z), axis=1, initial=0.0)  # host
    direct = moving & (largest[:, None] >= kink)
    return direct, moving & ~(direct & (kink <= 0))


def _safe_items(pairs: Pairs, pair, unit, direct_slots, kink, position, width: int):  # host
    """The direct slots' items whose input stays below its unit's ``kink`` take
    their series results: ``(direct_pair, direct_unit, direct_slots, safe)``,
    the other items, the slots renumbered ``[direct | safe | 0]``, and the safe
    items' places ``u * S + s`` in the series results (None: none), ``S`` =
    ``width`` and ``s`` the unit's slot in its sample (``position``)."""
    sample = pairs.sample[pair]
    reaching = np.abs(pairs.value[pair]) >= kink[sample, unit]  # host
    if reaching.all():
        return pair, unit, direct_slots, None
    places = pair * width + position[sample, unit]
    safe = places[~reaching].astype(np.int64)  # host
    return pair[reaching], unit[reaching], _renumbered(reaching)[direct_slots], safe


def _renumbered(reaching: np.ndarray) -> np.ndarray:  # host
    """Where each of the items (and the 0 after them) goes once those that
    ``reaching`` leaves out follow the others: ``[kept | left out | 0]``."""
    order = np.empty(reaching.shape[0] + 1, dtype=np.int64)  # host
    kept = int(np.count_nonzero(reaching))  # host
    order[:-1][reaching] = np.arange(kept)  # host
    order[:-1][~reaching] = np.arange(kept, reaching.shape[0])  # host
    order[-1] = reaching.shape[0]
    return order


def _direct_items(pairs: Pairs, direct: np.ndarray):  # host
    """The direct path's (pair, unit) items, grouped by pair (and by unit in a pair):
    the non-zero cells of ``direct[pairs.sample]``, built from the sample's direct units
    without the (pairs, units) mask (2.7 ms of the deep ReLU net's gradient)."""
    cell_sample, cell_unit = np.nonzero(direct)  # host: by sample, then unit
    per_sample = np.bincount(cell_sample, minlength=direct.shape[0])  # host
    counts = per_sample[pairs.sample]  # host: items per pair
    pair = np.repeat(np.arange(pairs.count, dtype=np.int64), counts)  # host
    # the k-th item of a pair is the k-th direct unit of its sample
    first_cell = np.cumsum(per_sample) - per_sample  # host
    item_start = np.cumsum(counts) - counts  # host
    k = np.arange(pair.shape[0]) - item_start[pair]  # host
    return pair, cell_unit[first_cell[pairs.sample[pair]] + k].astype(np.int64)  # host


def _layout(pairs: Pairs, direct: np.ndarray, position, width: int, n_direct: int):  # host
    """:class:`LayerPlan`'s ``layout`` and ``direct_slots`` from each sample's
    ``position`` of its units (series slot, -1: none) and ``direct`` units.
    Per sample, not per pair: every pair of a sample has the same units."""
    if position is None:
        return None, None
    per_sample = direct.sum(axis=1)  # host
    slots = int(per_sample.max(initial=0))  # T
    rank = np.cumsum(direct, axis=1) - 1  # host
    layout = np.where(direct, width + rank, np.where(position < 0, width + slots, position))  # host
    if not slots:
        return layout.astype(np.int64), None  # host
    # pair u's items start where the items of the pairs before it end
    counts = per_sample[pairs.sample]  # host
    starts = np.cumsum(counts) - counts  # host
    r = np.arange(slots)  # host
    padded = np.where(r < counts[:, None], starts[:, None] + r, n_direct)  # host
    return layout.astype(np.int64), padded.reshape(-1).astype(np.int64)  # host


@dataclass(frozen=True)
class OutputPlan:
    """The rows ``span`` of ``[W_L; b_L]`` of the last layer: score column ``k``
    moves by ``step * z[n, i]``; ``chunk`` inputs at a time."""

    layer: int
    span: tuple
    chunk: int


def output_plan(layer: int, span: tuple, input_bytes: int, chunk_bytes: int) -> OutputPlan:
    """Plan of the last layer: inputs per chunk from the bytes one input needs."""
    return OutputPlan(layer, tuple(span), max(1, chunk_bytes // max(1, input_bytes)))


def chunks(count: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(count)`` in pieces of ``size``."""
    size = max(1, int(size))
    return [(start, min(count, start + size)) for start in range(0, count, size)]


def input_columns(x: np.ndarray, span: tuple) -> np.ndarray:  # host
    """The columns ``span`` of ``[x, 1]`` (the last column, 1, is the bias's input)."""
    columns = x[:, span[0] : min(span[1], x.shape[1])]
    if span[1] > x.shape[1]:
        columns = np.concatenate([columns, np.ones((x.shape[0], 1), dtype=x.dtype)], axis=1)  # host
    return columns


def input_reach(x: np.ndarray, span: tuple, h: float) -> np.ndarray:  # host
    """``h * max |input|`` per sample over the columns ``span`` of ``[x, 1]``: the
    largest move of a unit's pre-activation under a step of ``h``."""
    columns = x[:, span[0] : min(span[1], x.shape[1])]
    largest = np.max(np.abs(columns), axis=1, initial=0.0)  # host
    if span[1] > x.shape[1]:  # the bias's input, 1
        largest = np.maximum(largest, 1.0)  # host
    return h * largest


def relu_kinks(pre, gap, reach, h: float, *, own: bool = True):  # host
    """A ReLU layer's ``(still, kink)``, both (N, J), from its pre-activations
    ``pre`` (N, J), the gaps to the kinks above (:mod:`xpnet.structured`; None:
    the head right above) and each sample's ``reach`` (N,) (:func:`input_reach`).

    ``still``: units off by more than any step of the sample reaches (skipped).
    ``kink``: the least input magnitude whose move may carry the unit to its own
    kink (``|a| / h``; only with ``own``) or a ReLU above to its (``gap / h``),
    with the margin :data:`KINK_SHARE`; None: none. Below it a unit that is on
    moves by exactly the step, one that is off not at all, and the layers above
    linearly.
    """
    with np.errstate(over="ignore"):  # host: an unreachable kink's inf is the answer
        kinks = [] if gap is None else [gap * (KINK_SHARE / h)]
        if own:
            kinks.append(np.abs(pre) * (KINK_SHARE / h))  # host
        kink = np.minimum(*kinks) if len(kinks) == 2 else (kinks[0] if kinks else None)  # host
    return pre <= -reach[:, None], kink
