"""Host-side plans of the structured numerical gradient: what to evaluate, in
what pieces.

Rules of this module:

* Plans are plain host objects (NumPy index arrays and Python numbers), built by
  pure functions from host copies of the data, with no array library besides
  NumPy and no device: they are tested without any backend. The computation
  (:mod:`xpnet.structured`) takes a plan and device arrays and nothing else.
* A gradient is planned in two steps. Up front, once: the sample blocks, whose
  intermediates fit the memory budget (:func:`sample_blocks`). Then, for each
  block, after what planning needs of its forward pass has come to the host in
  one transfer: each layer's distinct (sample, value) pairs
  (:func:`distinct_pairs`), which units of each sample are evaluated and how
  (:func:`unit_layout`), and the chunks (:func:`layer_plan`, :func:`chunks`).
* Why pairs: perturbing ``W_l[i, j]`` by ``s`` moves ``a_l[n, j]`` by ``s * z_l[n,
  i]``; sample ``n``'s loss depends on ``i`` only through that value, so the
  inputs of one sample with equal values give bit-identical perturbed losses,
  and inputs equal to 0 leave the loss bit-identical (nothing to evaluate). The
  bias ``b_l`` is the weight of an extra input that is always 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np  # host: plans are host index arrays

__all__ = [
    "Pairs",
    "UnitLayout",
    "LayerPlan",
    "OutputPlan",
    "distinct_pairs",
    "unit_layout",
    "layer_plan",
    "output_plan",
    "chunks",
    "sample_blocks",
    "unpermute_index",
]


@dataclass(frozen=True)
class Pairs:
    """The distinct non-zero (sample, value) pairs of one layer's inputs.

    Attributes
    ----------
    sample : ndarray (U,) int64
        Sample of each pair, non-decreasing (pairs are grouped by sample).
    value : ndarray (U,) float
        Its input value (exact copies of the inputs).
    index : ndarray (N, F) int64
        The pair of every input ``(n, i)``; ``U`` (one past the last) for inputs
        equal to 0, which move nothing.
    """

    sample: np.ndarray
    value: np.ndarray
    index: np.ndarray

    @property
    def count(self) -> int:
        return int(self.sample.shape[0])


def distinct_pairs(z: np.ndarray) -> Pairs:  # host
    """The distinct non-zero values of each row of ``z`` (N, F), as pairs."""
    z = np.asarray(z)  # host
    n_samples, n_features = z.shape
    order = np.argsort(z, axis=1)  # host: equal values are interchangeable
    ordered = np.take_along_axis(z, order, axis=1)  # host
    new = np.empty(ordered.shape, dtype=bool)  # host
    if n_features:
        new[:, 0] = True
        new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    new &= ordered != 0
    position = np.cumsum(new.ravel()).reshape(ordered.shape) - 1  # host
    count = int(new.sum())
    # an input repeats the pair of the first equal value before it in its row
    position = np.maximum.accumulate(np.where(new, position, -1), axis=1)  # host
    position[ordered == 0] = count
    index = np.empty_like(position)  # host
    np.put_along_axis(index, order, position, axis=1)  # host
    sample = np.repeat(np.arange(n_samples), new.sum(axis=1))  # host
    return Pairs(sample.astype(np.int64), ordered[new], index.astype(np.int64))


@dataclass(frozen=True)
class UnitLayout:
    """Which units of each sample each path evaluates, as slots.

    Every pair of sample ``n`` is evaluated for the units in its sample's slots:
    ``series[n, s]`` (the series path) and ``direct[n, s]`` (the direct path),
    padded to the largest count over the samples (a padded slot repeats a unit;
    its result is never read). ``index[n, j]`` is where unit ``j``'s result is
    found in a pair's row ``[series results | direct results | 0]``: units that no
    step moves point at the 0.

    ``series`` None: every unit, in order, on the series path (``index`` None).
    ``direct`` None: no direct path.
    """

    series: np.ndarray | None
    direct: np.ndarray | None
    index: np.ndarray | None
    n_units: int

    @property
    def series_width(self) -> int:
        return self.n_units if self.series is None else int(self.series.shape[1])

    @property
    def direct_width(self) -> int:
        return 0 if self.direct is None else int(self.direct.shape[1])


def unit_layout(
    n_units: int,
    moving: np.ndarray | None = None,
    direct: np.ndarray | None = None,
) -> UnitLayout:  # host
    """The slots of each sample from ``moving`` (N, J) (units some step moves;
    None: all) and ``direct`` (N, J) (units to evaluate directly; None: none)."""
    if direct is None and (moving is None or moving.all()):
        return UnitLayout(None, None, None, n_units)
    moving = np.ones_like(direct) if moving is None else moving  # host
    direct = np.zeros_like(moving) if direct is None else direct & moving  # host
    series = moving & ~direct
    kind = np.where(series, 0, np.where(direct, 1, 2))  # host
    order = np.argsort(kind, axis=1, kind="stable")  # host: series, direct, still
    position = np.empty_like(order)  # host
    np.put_along_axis(position, order, np.arange(n_units)[None, :], axis=1)  # host
    n_series = series.sum(axis=1)  # host
    n_direct = direct.sum(axis=1)  # host
    width_s, width_d = int(n_series.max(initial=0)), int(n_direct.max(initial=0))
    index = np.where(
        series,
        position,
        np.where(direct, width_s + position - n_series[:, None], width_s + width_d),
    )  # host
    direct_slots = None
    if width_d:
        at = np.minimum(n_series[:, None] + np.arange(width_d)[None, :], n_units - 1)  # host
        direct_slots = np.take_along_axis(order, at, axis=1)  # host
    return UnitLayout(order[:, :width_s], direct_slots, index, n_units)


def unpermute_index(pair_sample: np.ndarray, index: np.ndarray, width: int) -> np.ndarray:  # host
    """Flat positions, in the pairs' result rows ``[series | direct | 0]`` (of
    ``width`` each) laid end to end, of every pair's unit ``j``: ``(U, J)`` int64,
    from each pair's sample and the layout's ``index`` (N, J)."""
    offsets = np.arange(pair_sample.shape[0], dtype=np.int64)[:, None] * width  # host
    return offsets + index[pair_sample]


@dataclass(frozen=True)
class LayerPlan:
    """How the rows ``span`` of ``[W_l; b_l]`` of a layer below the last are
    computed for one sample block.

    Attributes
    ----------
    layer : int
    span : (int, int)
        Rows of ``[W_l; b_l]`` (row ``H_{l-1}`` is the bias).
    pairs : Pairs
    units : UnitLayout
    terms : int or None
        Series terms (:mod:`xpnet.series`); None: no series path (every moving
        unit is on the direct path).
    series_chunk, direct_chunk : int
        Pairs per chunk on each path.
    """

    layer: int
    span: tuple
    pairs: Pairs
    units: UnitLayout
    terms: int | None
    series_chunk: int
    direct_chunk: int


def layer_plan(
    layer: int,
    span: tuple,
    z: np.ndarray,  # host (N, F): the layer's inputs in the span (bias column included)
    n_units: int,
    *,
    still: np.ndarray | None = None,
    unsafe: np.ndarray | None = None,
    terms: int | None,
    series_item_bytes: int,
    direct_item_bytes: int,
    chunk_bytes: int,
) -> LayerPlan:  # host
    """The plan of one layer below the last for one sample block.

    ``still`` (N, J): units that no step can move (a ReLU off by more than the
    step reaches): skipped. ``unsafe`` (N, J): units whose move may carry a ReLU
    above across its kink: evaluated directly. ``terms`` None: every moving unit
    is evaluated directly. ``*_item_bytes``: what one (pair, unit) item of a
    chunk holds on each path.
    """
    pairs = distinct_pairs(z)
    moving = None if still is None else ~still
    if terms is None:
        direct = np.ones((z.shape[0], n_units), dtype=bool) if moving is None else moving  # host
    else:
        direct = unsafe
    units = unit_layout(n_units, moving, direct)
    series_pair = max(1, series_item_bytes * max(1, units.series_width))
    direct_pair = max(1, direct_item_bytes * max(1, units.direct_width))
    return LayerPlan(
        layer,
        tuple(span),
        pairs,
        units,
        terms,
        max(1, chunk_bytes // series_pair),
        max(1, chunk_bytes // direct_pair),
    )


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


def sample_blocks(
    per_sample_bytes: np.ndarray, budget: int, n_threads: int = 1, min_share: int = 0
) -> list[tuple[int, int]]:  # host
    """Consecutive sample ranges whose summed ``per_sample_bytes`` fit ``budget``
    (at least one sample each): the loss is a mean, so block gradients add.

    With ``n_threads > 1`` the blocks are also at most ``1 / n_threads`` of the
    total bytes (their count a multiple of ``n_threads``), so that every thread
    gets an equal share of the work; but no more threads are planned for than
    shares of at least ``min_share`` bytes (less work than that runs faster on
    one thread than it takes to hand out).
    """
    per_sample = np.asarray(per_sample_bytes, dtype=float)  # host
    cumulative = np.cumsum(per_sample)  # host
    n = per_sample.shape[0]
    if n and min_share > 0:
        n_threads = max(1, min(n_threads, int(cumulative[-1] // min_share)))
    if n_threads > 1 and n:
        # equal shares of the total: cut where the cumulative bytes pass each share
        count = n_threads * max(1, math.ceil(float(cumulative[-1]) / max(1, budget) / n_threads))
        count = min(count, n)
        shares = float(cumulative[-1]) * np.arange(1, count) / count  # host
        cuts = np.searchsorted(cumulative, shares, side="left") + 1  # host
        bounds = [0, *sorted(set(int(c) for c in np.clip(cuts, 1, n - 1))), n]
        return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    blocks, start, n = [], 0, per_sample.shape[0]
    while start < n:
        base = cumulative[start - 1] if start else 0.0
        stop = int(np.searchsorted(cumulative, base + budget, side="right"))
        stop = min(n, max(stop, start + 1))
        blocks.append((start, stop))
        start = stop
    return blocks
