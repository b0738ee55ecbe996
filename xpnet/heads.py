"""The three output heads: softmax, sigmoid (binary) and identity (regression).

Rules of this module:

* A head maps the last pre-activation ``a`` (shape ``(..., N, C)``) to outputs and
  to per-sample loss terms; the loss of a batch is ``sum_n terms_n / N`` (plus the
  network's weight decay). The terms are the book's, ``+1e-7`` inside every log:

  - ``softmax``: ``-log(softmax(a)[t] + 1e-7)``, targets are integer labels;
  - ``sigmoid``: ``-sum_c [t log(y + 1e-7) + (1 - t) log(1 - y + 1e-7)]`` with
    ``y = sigmoid(a)``, targets of 0/1;
  - ``identity``: ``0.5 * sum_c (a - t)^2``, float targets.

* Every loss function is analytic in ``a`` (complex input works: the complex step).
* Targets are validated once, at the network's boundary (:meth:`Head.targets`);
  internally softmax targets are ``(N,)`` int64 labels and the others ``(N, C)``
  arrays in the network's dtype.
* The structured gradient (:mod:`xpnet.structured`) asks a head for perturbed
  losses in three forms, written here so that each head keeps its own arithmetic:
  :meth:`Head.column_differences` (one score column moves: the last layer's
  parameters), :meth:`Head.series_coefficients` and :meth:`Head.series_differences`
  (the score row moves along a truncated power series in one hidden unit's
  change), and plain :meth:`Head.losses` for rows evaluated directly. Each
  perturbed loss is the head's loss at the perturbed scores; the identities used
  (``exp(a + d) = exp(a) exp(d)``, ``log p - log q = log(p / q)``) are exact in
  real arithmetic.
* Backprop (:meth:`Head.delta`) differentiates the terms without the ``1e-7``, as
  the book does.
"""

from __future__ import annotations

from dataclasses import dataclass

from array_api_compat import array_namespace
from array_api_compat import device as device_of

from . import functions as F
from . import series
from .checks import check_targets

__all__ = ["HEADS", "Head", "HeadCache", "get_head"]


@dataclass(frozen=True)
class HeadCache:
    """What the structured gradient keeps of the unperturbed output layer.

    Attributes
    ----------
    scores : array (N, C)
        The last pre-activations (softmax: shifted by each row's maximum).
    target : array
        ``(N,)`` labels (softmax) or ``(N, C)`` targets.
    weights : array (N, C) or None
        Softmax only: ``exp(scores)`` (each row's largest is 1).
    total : array (N,) or None
        Softmax only: each row's sum of ``weights``.
    weight_t : array (N,) or None
        Softmax only: the weight of each sample's label.
    hit : array (N, C) bool or None
        Softmax only: where each row's class is its label.
    label_and_total : array (2, N, 1) or None
        Softmax only: ``weight_t`` and ``total`` stacked (the first rows of the
        series' table).
    """

    scores: object
    target: object
    weights: object = None
    total: object = None
    weight_t: object = None
    hit: object = None
    label_and_total: object = None


class Head:
    """Base class; see the module docstring for the contract."""

    name = ""
    has_accuracy = True

    def targets(self, t, batch_size: int, output_size: int, dtype, name: str = "t"):
        raise NotImplementedError

    def output(self, a):
        raise NotImplementedError

    def losses(self, a, t):
        """Per-sample terms, shape ``a.shape[:-1]``; ``t`` broadcasts against it."""
        raise NotImplementedError

    def delta(self, y, t):
        """``d term_n / d a`` without the ``1e-7`` (backprop), shape (N, C)."""
        raise NotImplementedError

    def hits(self, y, t):
        """Correct predictions (0-d array) and how many were judged (int)."""
        raise NotImplementedError

    def cache(self, a, t) -> HeadCache:
        """What the structured gradient keeps of the unperturbed scores ``a``."""
        raise NotImplementedError

    def column_differences(self, cache: HeadCache, delta, combine):
        """Perturbed-loss differences when one score column moves.

        ``delta`` (S, I, N): per step, input ``i`` and sample, how much score
        column ``k`` moves (the same for every ``k``). Returns (I, C): for each
        input and column ``k``, ``combine`` of the moved losses summed over the
        samples.
        """
        raise NotImplementedError

    def series_coefficients(self, cache: HeadCache, rows, moves, terms: int, scale=None):
        """Per (sample, unit) arrays, for samples ``rows`` (a slice; None: all),
        that :meth:`series_differences` needs, stacked: ``(R, n, J, ...)``.

        ``moves`` is the series of the score rows' change when unit ``j`` below
        moves by ``dz``: ``moves[m]`` ``(n, J, C)``, or ``(J, C)`` shared by every
        sample, the coefficient of ``dz^m`` (``moves[0]`` None; a list ``[None,
        V]``: exactly linear). ``scale`` (n, J), optional: the series in ``r``
        instead, ``dz = scale * r`` (the coefficient of ``dz^m`` times
        ``scale^m``).
        """
        raise NotImplementedError

    def series_differences(
        self, cache: HeadCache, coefficients, dz, take, combine, both_signs: bool = False
    ):
        """``combine`` of the losses at the moved scores, per item.

        ``coefficients``: the ``R`` rows of :meth:`series_coefficients`, each
        gathered for the items; ``dz`` (S, *items): each item's unit change per
        step (or ``r``, for coefficients with a ``scale``); ``take(array)``
        gathers a per-sample array (N, ...) for the items. ``both_signs``:
        ``dz`` (*items) is the first step's change, the second's is ``-dz``
        (:func:`xpnet.series.horner`); ``combine`` then gets the two steps'
        losses as a list.
        """
        raise NotImplementedError


class Softmax(Head):
    """Softmax with the book's cross-entropy error."""

    name = "softmax"

    def targets(self, t, batch_size, output_size, dtype, name="t"):
        return check_targets(t, batch_size, output_size, name)

    def output(self, a):
        return F.softmax(a)

    def losses(self, a, t):
        return F.cross_entropy_error(F.softmax(a), t, reduce=False)

    def delta(self, y, t):
        xp = array_namespace(y, t)
        one_hot = xp.astype(
            t[:, None] == xp.arange(y.shape[1], device=device_of(y))[None, :], y.dtype
        )
        return y - one_hot

    def hits(self, y, t):
        xp = array_namespace(y, t)
        return xp.sum(xp.astype(xp.argmax(y, axis=1) == t, xp.int64)), t.shape[0]

    def cache(self, a, t):
        xp = array_namespace(a, t)
        s = a - xp.max(a, axis=1, keepdims=True)
        weights = xp.exp(s)
        hit = t[:, None] == xp.arange(a.shape[-1], device=device_of(a))  # (N, C)
        weight_t = xp.sum(xp.where(hit, weights, 0.0), axis=1)  # exact: the other terms are 0
        total = xp.sum(weights, axis=1)
        both = xp.stack([weight_t, total])[:, :, None]
        return HeadCache(s, t, weights, total, weight_t, hit, both)

    def column_differences(self, cache, delta, combine):
        # p_t = e_t exp(d [k == t]) / (sum_c e_c + e_k (exp(d) - 1)): exp(a + d) =
        # exp(a) exp(d), one exp per (step, input, sample) for every class k
        xp = array_namespace(delta)
        e = cache.weights.T  # (C, N): a view (2-D .T is in the Array API)
        hit = cache.hit.T  # (C, N): a view
        grow = _expm1(xp, delta)[:, :, None, :]  # (S, I, 1, N)
        total = cache.total + e * grow  # (S, I, C, N)
        p = cache.weight_t * (1.0 + xp.where(hit, grow, 0.0))
        p /= total
        p += F.LOG_EPS
        return xp.sum(combine.negative_log(p), axis=-1)  # (I, C)

    def series_coefficients(self, cache, rows, moves, terms, scale=None):
        # p_t = e_t / Y, Y(dz) = sum_c e_c exp(x_c(dz) - x_t(dz)): the exp of a
        # series with no constant term, weighted by the cached e_c. Rows: e_t,
        # then Y's coefficients Y_0 = sum_c e_c, Y_1, ..., Y_{terms-1}
        xp = array_namespace(cache.weights)
        labels = _rows(cache.target, rows)
        n = labels.shape[0]
        both = cache.label_and_total if rows is None else cache.label_and_total[:, rows, :]
        n_units = next(m.shape[-2] for m in moves if m is not None)
        front = xp.broadcast_to(both, (2, n, n_units))
        if terms < 2:
            return front
        if len(moves) == 2:  # linear in dz: exp's coefficients are gap^m / m!
            gap = _gaps(xp, moves[1], labels)  # (n, J, C)
            if scale is not None:  # linear in r: the gaps per unit r
                gap = gap * scale[..., None]
            powers = [gap]  # (multiplied out: a cumulative product along a short
            for m in range(2, terms):  # first axis ran 10x slower on NumPy)
                powers.append(powers[-1] * (gap / m))
            grown = xp.stack(powers)  # (terms - 1, n, J, C)
        else:  # every term's gaps at once, then exp's recurrence term by term
            moves = _scaled(moves, scale)
            present = [m for m in range(1, min(terms, len(moves))) if moves[m] is not None]
            stacked = xp.stack([_per_sample(xp, moves[m], n) for m in present])  # (M, n, J, C)
            index = xp.broadcast_to(labels[None, :, None, None], (*stacked.shape[:-1], 1))
            moved = xp.unstack(stacked - xp.take_along_axis(stacked, index, axis=-1))
            gaps = [None] * terms
            for m, gap in zip(present, moved, strict=True):
                gaps[m] = gap
            grown = xp.stack(_filled(xp, series.exp(gaps, terms)[1:]))
        # sum_c e_c grown_c (vecdot conjugates its first argument: the real weights)
        per_unit = xp.vecdot(_rows(cache.weights, rows)[:, None, :], grown)  # (terms - 1, n, J)
        return xp.concat([front, per_unit])

    def series_differences(self, cache, coefficients, dz, take, combine, both_signs=False):
        weight_t, *total = coefficients
        if both_signs:
            p = [weight_t / y for y in series.horner(total, dz, both_signs=True)]
            for p_step in p:
                p_step += F.LOG_EPS
            return combine.negative_log(p)
        p = weight_t / series.horner(total, dz)
        p += F.LOG_EPS
        return combine.negative_log(p)


class _Separable(Head):
    """A head whose terms are sums over classes of ``term(a_c, t_c)``."""

    def term(self, a, t):
        raise NotImplementedError

    def losses(self, a, t):
        xp = array_namespace(a)
        return xp.sum(self.term(a, t), axis=-1)

    def cache(self, a, t):
        return HeadCache(a, t)

    def column_differences(self, cache, delta, combine):
        # the other classes' terms are bit-identical in f(+) and f(-): only the
        # moved class's term is evaluated
        xp = array_namespace(delta)
        scores = cache.scores.T  # (C, N): views
        target = cache.target.T
        moved = self.term(scores + delta[:, :, None, :], target)  # (S, I, C, N)
        return xp.sum(combine.loss(moved), axis=-1)

    def series_coefficients(self, cache, rows, moves, terms, scale=None):
        # the score change's own coefficients, from dz^1 on: (terms - 1, n, J, C)
        xp = array_namespace(cache.scores)
        n = _rows(cache.target, rows).shape[0]
        moves = _scaled(moves, scale)
        out = []
        for m in range(1, terms):
            x = moves[m] if m < len(moves) else None
            out.append(None if x is None else xp.broadcast_to(x, (n, *x.shape[-2:])))
        return xp.stack(_filled(xp, out))

    def series_differences(self, cache, coefficients, dz, take, combine, both_signs=False):
        xp = array_namespace(dz)
        scores, target = take(cache.scores), take(cache.target)
        change = series.horner([None, *coefficients], dz[..., None], both_signs=both_signs)
        if both_signs:  # the two steps' changes (*items, C)
            return combine.loss([xp.sum(self.term(scores + c, target), axis=-1) for c in change])
        moved = self.term(scores + change, target)  # (S, *items, C)
        return combine.loss(xp.sum(moved, axis=-1))

    def delta(self, y, t):
        return y - t

    def _float_targets(self, t, batch_size, output_size, dtype, name):
        xp = array_namespace(t)
        if t.ndim == 1 and output_size == 1 and t.shape[0] == batch_size:
            t = xp.reshape(t, (batch_size, 1))
        if t.ndim != 2 or tuple(t.shape) != (batch_size, output_size):
            shapes = f"({batch_size}, {output_size})" + (
                f" or ({batch_size},)" if output_size == 1 else ""
            )
            raise ValueError(
                f"{name} must have shape {shapes} for output={self.name!r}, got {tuple(t.shape)}"
            )
        return t


class Sigmoid(_Separable):
    """Independent sigmoid outputs with the binary cross-entropy error."""

    name = "sigmoid"

    def targets(self, t, batch_size, output_size, dtype, name="t"):
        xp = array_namespace(t)
        if not (xp.isdtype(t.dtype, "numeric") or xp.isdtype(t.dtype, "bool")):
            raise TypeError(f"{name} must be 0/1 targets, got dtype {t.dtype}")
        t = self._float_targets(t, batch_size, output_size, dtype, name)
        t = xp.astype(t, dtype)
        if not bool(xp.all((t == 0) | (t == 1))):
            raise ValueError(
                f"{name} must hold only 0 and 1 for output='sigmoid' "
                "(binary targets, one column per output)"
            )
        return t

    def output(self, a):
        return F.sigmoid(a)

    def term(self, a, t):
        xp = array_namespace(a)
        y = F.sigmoid(a)
        return -(t * xp.log(y + F.LOG_EPS) + (1.0 - t) * xp.log(1.0 - y + F.LOG_EPS))

    def hits(self, y, t):
        xp = array_namespace(y, t)
        right = xp.astype((y > 0.5) == (t == 1), xp.int64)
        return xp.sum(right), t.shape[0] * t.shape[1]


class Identity(_Separable):
    """Identity outputs with the sum-of-squares error (regression)."""

    name = "identity"
    has_accuracy = False

    def targets(self, t, batch_size, output_size, dtype, name="t"):
        xp = array_namespace(t)
        if not xp.isdtype(t.dtype, "real floating"):
            raise TypeError(
                f"{name} must be float targets for output='identity' (regression), "
                f"got dtype {t.dtype}; class labels need output='softmax'"
            )
        t = self._float_targets(t, batch_size, output_size, dtype, name)
        t = xp.astype(t, dtype)
        if not bool(xp.all(xp.isfinite(t))):
            raise ValueError(f"{name} contains NaN or inf")
        return t

    def output(self, a):
        return a

    def term(self, a, t):
        d = a - t
        return 0.5 * (d * d)

    def hits(self, y, t):
        raise ValueError(
            "accuracy is not defined for output='identity' (regression); use loss instead"
        )


def _expm1(xp, d):
    """``exp(d) - 1`` without cancellation for real ``d``; complex ``d`` (the
    complex step) takes ``exp(d) - 1``, whose imaginary part has none."""
    if xp.isdtype(d.dtype, "complex floating"):
        return xp.exp(d) - 1.0
    return xp.expm1(d)


def _rows(array, rows):
    """Rows ``rows`` (a slice; None: all) of a per-sample array."""
    return array if rows is None else array[rows, ...]


def _per_sample(xp, x, n):
    """A score change (n, J, C) as it is; one shared by every sample (J, C) broadcast."""
    return x if x.ndim == 3 else xp.broadcast_to(x, (n, *x.shape))


def _gaps(xp, x, labels):
    """``x[n, j, c] - x[n, j, t_n]`` (n, J, C) of a score change ``x`` (n, J, C),
    or (J, C) shared by every sample."""
    if x.ndim == 2:  # shared by every sample (the head's weights)
        at_label = xp.take(x, labels, axis=1)  # (J, n)
        return x - at_label.T[:, :, None]
    index = xp.broadcast_to(labels[:, None, None], (*x.shape[:-1], 1))
    return x - xp.take_along_axis(x, index, axis=-1)


def _scaled(moves, scale):
    """A score change's series in ``dz`` as the series in ``r``, ``dz = scale * r``
    (``scale`` (n, J); None: as it is): ``moves[m]`` times ``scale^m``."""
    if scale is None:
        return moves
    out, power = [None], scale[..., None]
    for m, move in enumerate(moves[1:], start=1):
        out.append(None if move is None else move * power)
        if m + 1 < len(moves):
            power = power * scale[..., None]
    return out


def _filled(xp, coefficients):
    """Series coefficients with the zeros (None) made arrays, so that they stack."""
    like = next(c for c in coefficients if c is not None)
    return [xp.zeros_like(like) if c is None else c for c in coefficients]


HEADS = {head.name: head for head in (Softmax(), Sigmoid(), Identity())}


def get_head(name) -> Head:
    """The head called ``name``; a clear error for an unknown one."""
    if name not in HEADS:
        raise ValueError(f"output={name!r} is not known; expected one of {sorted(HEADS)}")
    return HEADS[name]
