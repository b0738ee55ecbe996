"""The distinct (sample, value) pairs of a layer's inputs: where a structured
gradient's perturbations of one weight row give bit-identical losses.

Rules of this module:

* Host only (NumPy), pure functions of a host copy of the inputs; the pairs
  are a plan (:mod:`xpnet.plan`), tested without any backend.
* Why pairs: perturbing ``W_l[i, j]`` by ``s`` moves ``a_l[n, j]`` by ``s * z_l[n,
  i]``; sample ``n``'s loss depends on ``i`` only through that value, so the
  inputs of one sample with equal values give bit-identical perturbed losses,
  and inputs equal to 0 leave the loss bit-identical: they share one pair of
  value 0, whose results are exactly 0.
* The pairs are a function of the inputs alone, whichever way they are found:
  without a sort where the inputs lie on the grid of 8-bit images scaled to
  ``[0, 1]`` (:func:`_grid_pairs`, checked exactly, else not used), otherwise by
  a sort of each row (of float32 keys where every input is one exactly, else of
  int64 keys).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np  # host: the pairs are host index arrays

__all__ = ["Pairs", "distinct_pairs"]

# the grid of 8-bit images scaled to [0, 1]: k / 255 (the data sets' loaders and
# the book's normalisation), each value's code rint(255 * value)
_LEVELS = 255


@dataclass(frozen=True)
class Pairs:
    """The distinct non-zero (sample, value) pairs of one layer's inputs, and
    one pair of value 0 after them.

    Inputs equal to 0 move nothing: they all point at the last pair, of value 0
    (given to the last sample), whose moved losses are bit-identical to the
    unmoved ones, so that its results are exactly 0 on every path; its row of
    results is the one that inputs equal to 0 add.

    Attributes
    ----------
    sample : ndarray (U,) int64
        Sample of each pair, non-decreasing (pairs are grouped by sample).
    value : ndarray (U,) float
        Its input value (exact copies of the inputs); the last one 0.
    index : ndarray (N, F) int64
        The pair of every input ``(n, i)``; ``U - 1`` (the pair of value 0) for
        inputs equal to 0.
    """

    sample: np.ndarray  # host
    value: np.ndarray  # host
    index: np.ndarray  # host

    @property
    def count(self) -> int:
        return int(self.sample.shape[0])

    @property
    def sample_starts(self) -> np.ndarray:  # host
        """(N + 1,): sample ``n``'s pairs are ``sample_starts[n]:sample_starts[n + 1]``."""
        return np.searchsorted(self.sample, np.arange(self.index.shape[0] + 1))  # host


def distinct_pairs(z: np.ndarray) -> Pairs:  # host
    """The distinct non-zero values of each row of ``z`` (N, F), as pairs, and
    the pair of value 0 after them (:class:`Pairs`)."""
    z = np.asarray(z)  # host
    if z.shape[1] > _LEVELS and z.shape[0]:  # the table of codes no larger than the inputs
        pairs = _grid_pairs(z)
        if pairs is not None:
            return pairs
    return _sorted_pairs(z)


def _sorted_pairs(z: np.ndarray) -> Pairs:  # host
    """:func:`distinct_pairs` by a sort of each row of ``z`` (N, F)."""
    n_samples, n_features = z.shape
    keys = _float32_keys(z)
    if keys is None:
        keys = _sort_keys(z)
    order = np.argsort(keys, axis=1)  # host: equal values are interchangeable
    # the sorted rows' places in the flat z: a flat take and scatter run 2x as
    # fast as take_along_axis/put_along_axis, which build an index per axis
    rows = np.arange(n_samples, dtype=np.int64)[:, None] * n_features  # host
    flat = (order + rows).reshape(-1)  # host
    ordered = np.take(z.reshape(-1), flat).reshape(z.shape)  # host
    new = np.empty(ordered.shape, dtype=bool)  # host
    if n_features:
        new[:, 0] = True
        new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    zero = ordered == 0  # host
    new &= ~zero
    starts = np.flatnonzero(new)  # host: each pair's first input, in sorted order
    count = int(starts.shape[0])
    # in a sorted row a non-zero input is its pair's first or equals the input
    # before it: its pair is the count of pairs started up to it, less one (a
    # running sum; no maximum scan: those hold the GIL on NumPy)
    position = np.cumsum(new, axis=None).reshape(ordered.shape) - 1  # host
    position = np.where(zero, count, position)  # host
    scattered = np.empty(position.size, dtype=np.int64)  # host
    scattered[flat] = position.reshape(-1)
    index = scattered.reshape(z.shape)
    # the pair of value 0, last (its sample the last: samples stay non-decreasing)
    sample = np.append(starts // max(n_features, 1), max(n_samples - 1, 0)).astype(np.int64)  # host
    value = np.append(ordered.reshape(-1)[starts], np.zeros(1, dtype=z.dtype))  # host
    return Pairs(sample, value, index)


def _grid_pairs(z: np.ndarray) -> Pairs | None:  # host
    """:func:`distinct_pairs` without a sort, or None: where ``c = rint(255 z)``
    lies in ``0..255`` and takes each distinct value of ``z`` (N, F) to a code of
    its own (checked: every input equals the one value kept for its code).
    Then codes order like the values (``rint`` never decreases), and each
    sample's distinct values are the codes it uses, in order: an (N, 256)
    table of them, counted up (the pairs' numbers) and read back per input.

    Why: distinct_pairs of 100 Fashion-MNIST rows took 2.0 ms, half of it the
    rows' argsort; this took 1.1 ms (docs/benchmarks.md).
    """
    n_samples = z.shape[0]
    width = _LEVELS + 1
    scaled = z * float(_LEVELS)  # host
    np.rint(scaled, out=scaled)  # host
    if not (scaled.min() >= 0.0 and scaled.max() <= _LEVELS):  # NaN fails too
        return None
    codes = scaled.astype(np.int64)  # host
    kept = np.zeros(width, dtype=z.dtype)  # host: one value of each code
    kept[codes] = z
    if not np.array_equal(kept[codes], z):  # host: two distinct values share a code
        return None
    keys = codes  # (sample, code) numbered n * 256 + c, in place
    keys += (np.arange(n_samples, dtype=np.int64) * width)[:, None]  # host
    used = np.bincount(keys.reshape(-1), minlength=n_samples * width) > 0  # host
    zero = kept[0] == 0  # code 0 is the inputs equal to 0 (or none uses it)
    if zero:
        used.reshape(n_samples, width)[:, 0] = False
    first = np.flatnonzero(used)  # host: each pair's (sample, code), in order
    number = np.cumsum(used) - 1  # host: each used (sample, code)'s pair
    if zero:  # the pair of value 0, last
        number.reshape(n_samples, width)[:, 0] = first.shape[0]
    sample = np.append(first // width, n_samples - 1).astype(np.int64)  # host
    value = np.append(kept[first % width], np.zeros(1, dtype=z.dtype))  # host
    return Pairs(sample, value, number[keys])


def _float32_keys(z: np.ndarray) -> np.ndarray | None:  # host
    """float32 keys (N, F) that sort like the values of ``z`` (N, F), every input
    equal to 0 (or -0.0) keyed inf, above every other value; None where a value
    is not exactly a finite float32 (then :func:`_sort_keys`).

    Why: pixels scaled in float32 (the datasets' loaders, the book's
    normalisation) stay exact float32 values in a float64 network, and NumPy
    argsorts float32 keys faster than int64 ones: distinct_pairs of 100
    Fashion-MNIST rows took 2.3-2.5 against 3.1-3.2 ms here (x86-simd-sort,
    whose partitions take the run of equal zero keys in stride). Exact values
    keep their order and their ties, so the pairs are the same.
    """
    with np.errstate(over="ignore"):  # host: a value beyond float32 becomes inf: refused below
        keys = z if z.dtype == np.float32 else z.astype(np.float32)  # host
    if keys is not z and not np.array_equal(keys, z):  # host: rounded
        return None
    if not np.isfinite(keys).all():  # host: an inf would tie with the zeros' key
        return None
    return np.where(keys == 0, np.float32(np.inf), keys)  # host


# inf's key is 0x7FF0...0 (2**63 - 2**52), every finite value's below it: the
# zeros' keys, from one above it on, lie above every finite or infinite value's
_ZERO_KEYS = np.int64(2**63 - 2**52 + 1)  # host


def _sort_keys(z: np.ndarray) -> np.ndarray:  # host
    """int64 keys (N, F) that sort like the values of ``z`` (N, F), real floating,
    except that each input equal to 0 (or -0.0) gets a key of its own, above
    every other value's, by its column.

    Why: with half an image's inputs 0, NumPy's quicksort argsort of the values
    themselves took 2.0 ms for 50 Fashion-MNIST rows and 0.76 ms of these keys
    (distinct keys: no long runs of equal ones); dense rows sort as fast either
    way. A float's bits read as a signed integer sort like the float for
    non-negative floats and in reverse for negative ones: flipping a negative
    key's 63 low bits puts them in order (sign-magnitude to two's complement).
    Equal non-zero values get equal keys, so they still lie side by side.
    """
    bits = np.ascontiguousarray(z, dtype=np.float64).view(np.int64)  # host: exact
    keys = bits ^ ((bits >> 63) & np.int64(2**63 - 1))  # host
    zero = z == 0  # host
    columns = np.arange(z.shape[1], dtype=np.int64)  # host
    return np.where(zero, _ZERO_KEYS + columns, keys)  # host
