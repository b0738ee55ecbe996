"""The memory one sample of a structured gradient needs, and the sample blocks
that fit a budget: planned up front, once per gradient.

Rules of this module:

* Like :mod:`xpnet.plan`, pure functions of host NumPy arrays and Python
  numbers, tested without any backend.
* The loss is a mean, so the gradients of consecutive sample blocks add: a block
  is any range of samples whose summed per-sample bytes fit the budget (at least
  one sample). On several threads the blocks are equal shares of the total, a
  multiple of the thread count, but no more shares than the work is worth; each
  thread takes one run of consecutive blocks (:func:`thread_shares`), the
  calling thread's (the first) larger by the others' hand-off lag.
"""

from __future__ import annotations

import math

import numpy as np  # host: plans are host arrays

from .plan import chunks

__all__ = ["gradient_blocks", "sample_blocks", "thread_shares", "per_sample_bytes"]


def sample_blocks(
    per_sample_bytes: np.ndarray,  # host
    budget: int,
    n_threads: int = 1,
    min_share: int = 0,  # host
    lead: int = 0,
) -> list[tuple[int, int]]:  # host
    """Consecutive sample ranges whose summed ``per_sample_bytes`` fit ``budget``
    (at least one sample each): the loss is a mean, so block gradients add.

    With ``n_threads > 1`` the blocks are also at most ``1 / n_threads`` of the
    total bytes (their count a multiple of ``n_threads``), so that every thread
    gets an equal share of the work; but no more threads are planned for than
    shares of at least ``min_share`` bytes (less work than that runs faster on
    one thread than it takes to hand out). The first run of ``count /
    n_threads`` blocks (the calling thread's, :func:`thread_shares`) holds
    ``lead`` bytes more than each other run: the others' hand-off lag (at most
    a quarter of an equal share, and within ``budget``).
    """
    per_sample = np.asarray(per_sample_bytes, dtype=float)  # host
    cumulative = np.cumsum(per_sample)  # host
    n = per_sample.shape[0]
    if n and min_share > 0:
        n_threads = max(1, min(n_threads, int(cumulative[-1] // min_share)))
    if n_threads > 1 and n:
        # equal shares of the total: cut where the cumulative bytes pass each share
        # (the few shares in Python: NumPy calls on tiny arrays cost ~10 us each
        # with cold caches, here before any helper can start)
        total = float(cumulative[-1])
        count = n_threads * max(1, math.ceil(total / max(1, budget) / n_threads))
        count = min(count, n)
        per_run = count // n_threads
        if lead > 0 and count % n_threads == 0:  # the caller's run first, the rest equal
            room = (per_run * budget * n_threads - total) / (n_threads - 1)
            ahead = max(0.0, min(lead, total / n_threads / 4, room))
            first = (total + (n_threads - 1) * ahead) / n_threads  # the caller's run
            shares = [
                first * k / per_run
                if k <= per_run
                else first + (total - first) * (k - per_run) / (count - per_run)
                for k in range(1, count)
            ]
        else:
            shares = [total * k / count for k in range(1, count)]
        cuts = np.searchsorted(cumulative, shares, side="left").tolist()  # host
        bounds = [0, *sorted({min(max(c + 1, 1), n - 1) for c in cuts}), n]
        return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    blocks, start, n = [], 0, per_sample.shape[0]
    while start < n:
        base = cumulative[start - 1] if start else 0.0
        stop = int(np.searchsorted(cumulative, base + budget, side="right"))  # host
        stop = min(n, max(stop, start + 1))
        blocks.append((start, stop))
        start = stop
    return blocks


def gradient_blocks(
    x: np.ndarray,  # host (N, D)
    spans: list,
    sizes: tuple,
    itemsize: int,
    max_terms: int,
    budget: int,
    n_threads: int = 1,
    min_share: int = 0,
    lead: int = 0,
) -> list[tuple[int, int]]:  # host
    """A structured gradient's sample blocks: :func:`sample_blocks` of
    :func:`per_sample_bytes`, first from the bound without a sort (0.7 ms of a
    100-image batch, before the threads start), exact only where the bound
    gives more blocks than threads (larger blocks run faster)."""
    bound = per_sample_bytes(x, spans, sizes, itemsize, max_terms, exact=False)
    blocks = sample_blocks(bound, budget, n_threads, min_share, lead)
    if len(blocks) > n_threads:
        exact = per_sample_bytes(x, spans, sizes, itemsize, max_terms)
        blocks = sample_blocks(exact, budget, n_threads, min_share, lead)
    return blocks


def thread_shares(
    blocks: list[tuple[int, int]], n_threads: int, *, row_bytes: int = 0, max_bytes: int = 0
) -> list[tuple[int, int, list]]:
    """The blocks grouped into runs of consecutive blocks, one run per thread
    (the runs of :func:`sample_blocks`' shares are equal but the first): ``(start,
    stop, bounds)``, the run's samples and its blocks' bounds counted from
    ``start``. A thread computes its run's blocks one after another and adds
    them in order; the runs are added in order. With ``max_bytes``, a run's
    inputs (``row_bytes`` per sample, copied for a helper process) stay within
    it: more, shorter runs (at least one block each), handed out
    ``n_threads`` at a time.

    Why: handed out a block per thread at a time, every round of blocks waited
    for its slowest block and its result's hand-off; the Keras net's gradient
    (four blocks on two cores) ran 1.5-5.7 ms faster in runs, 12-25 ms at 512
    images (docs/benchmarks.md).
    """
    per_run = max(1, len(blocks) // max(1, n_threads))
    if blocks and row_bytes > 0 and max_bytes > 0:
        widest = max(b - a for a, b in blocks)
        per_run = max(1, min(per_run, max_bytes // (widest * row_bytes)))
    shares = []
    for lo, hi in chunks(len(blocks), per_run):
        start = blocks[lo][0]
        shares.append(
            (start, blocks[hi - 1][1], [(a - start, b - start) for a, b in blocks[lo:hi]])
        )
    return shares


# bytes per (pair, unit) a block keeps besides its result: the pairs' rows of
# results side by side, the per-pair rows the inputs sum, and on a device the
# gathered layout (measured peaks: 0.5-0.8 of the estimate on Fashion-MNIST nets)
_ITEM_BYTES = 8 + 8 + 8


def per_sample_bytes(
    x: np.ndarray,  # host (N, D): the network's inputs
    spans: list,
    sizes: tuple,
    itemsize: int,
    max_terms: int,
    *,
    exact: bool = True,
) -> np.ndarray:  # host
    """What one sample adds to a sample block's memory, per sample of ``x`` (N, D):
    the cached forward pass, and the largest layer's pairs (inputs counted dense
    above the first), items, stored results and ``max_terms`` series
    coefficients; ``spans`` as the structured gradient's (None: a layer skipped).

    ``exact``: the first layer's pairs counted as :func:`xpnet.pairs.distinct_pairs`
    will find them (a sort of ``x``); else bounded by the non-zero inputs (no
    sort; never below the exact bytes, 1.6x them on Fashion-MNIST's first layer).
    """
    # the first layer's distinct non-zero values per sample (+ the bias input):
    # its pairs, as distinct_pairs will find them (sorted 64 rows at a time: no copy)
    pairs0 = np.ones(x.shape[0])  # host
    if exact:
        for start, stop in chunks(x.shape[0], 64):
            ordered = np.sort(x[start:stop], axis=1)  # host
            changes = np.count_nonzero(ordered[:, 1:] != ordered[:, :-1], axis=1)  # host
            pairs0[start:stop] += changes + (ordered[:, 0] != 0)
    else:
        pairs0 += np.count_nonzero(x, axis=1)  # host
    per_sample = np.full(x.shape[0], float(itemsize * 4 * sum(sizes[1:])))  # host
    largest = np.zeros_like(per_sample)  # host
    for layer, span in enumerate(spans[:-1]):
        if span is None:
            continue
        pairs = pairs0 if layer == 0 else float(span[1] - span[0])
        units = sizes[layer + 1]
        kept = max_terms * units * sizes[-1] * itemsize + 8 * (span[1] - span[0])
        largest = np.maximum(largest, pairs * units * (itemsize + _ITEM_BYTES) + kept)  # host
    return per_sample + largest
