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
* The structured gradient asks a head for two kinds of perturbed losses, written
  here so that each head keeps its own arithmetic:
  :meth:`Head.row_losses` (the whole score row moves along a direction, summed one
  class at a time so temporaries do not grow with ``C``) and
  :meth:`Head.column_losses` (one class's score moves).
* Backprop (:meth:`Head.delta`) differentiates the terms without the ``1e-7``, as
  the book does.
"""

from __future__ import annotations

from dataclasses import dataclass

from array_api_compat import array_namespace
from array_api_compat import device as device_of

from . import functions as F
from .checks import check_targets

__all__ = ["HEADS", "Head", "HeadCache", "get_head"]


@dataclass(frozen=True)
class HeadCache:
    """What the structured gradient keeps of the unperturbed output layer.

    Attributes
    ----------
    by_class : array (C, N)
        Score columns, contiguous: the row-max-shifted scores for softmax, the
        pre-activations themselves for the other heads.
    target : array
        ``(N,)`` labels (softmax) or ``(C, N)`` targets by class (the others).
    score_t : array (N,) or None
        Softmax only: the shifted score of each sample's label.
    """

    by_class: object
    target: object
    score_t: object = None


def _contiguous(xp, a):
    """Row-major copy of ``a`` (flattening a transposed view forces the copy)."""
    return xp.reshape(xp.reshape(a, (-1,)), a.shape)


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
        raise NotImplementedError

    def row_losses(self, cache: HeadCache, n_idx, dz, w):
        """Terms of samples ``n_idx`` when their score row moves by ``dz * w``.

        ``dz`` has shape (S, U, J): a change per step, sample and hidden unit;
        ``w`` (C, J) is the unit's row of the last weight matrix, by class.
        Returns (S, U, J).
        """
        raise NotImplementedError

    def column_losses(self, cache: HeadCache, delta):
        """Terms of every sample when score column ``k`` alone moves by ``delta``.

        ``delta`` has shape (S, J, 1, N); returns (S, J, K=C, N).
        """
        raise NotImplementedError

    def class_losses(self, cache: HeadCache, scores, n):
        """Terms for whole score columns ``scores`` (C, M) of samples ``n`` (M,),
        in the coordinates of ``cache.by_class`` (shifted for softmax). Returns (M,).
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
        score_t = xp.take_along_axis(s, t[:, None], axis=1)[:, 0]
        return HeadCache(_contiguous(xp, xp.permute_dims(s, (1, 0))), t, score_t)

    def row_losses(self, cache, n_idx, dz, w):
        xp = array_namespace(dz, w)
        s = xp.take(cache.by_class, n_idx, axis=1)  # (C, U): rows contiguous
        # the softmax's sum over classes, one class at a time: every temporary is
        # (S, U, J), which keeps a chunk in cache however many classes there are
        total = xp.exp(s[0, None, :, None] + dz * w[0, :])
        for c in range(1, w.shape[0]):
            total = total + xp.exp(s[c, None, :, None] + dz * w[c, :])
        w_t = xp.take(w, xp.take(cache.target, n_idx), axis=0)  # (U, J)
        score_t = xp.take(cache.score_t, n_idx)[None, :, None] + dz * w_t[None, ...]
        return -xp.log(xp.exp(score_t) / total + F.LOG_EPS)

    def class_losses(self, cache, scores, n):
        xp = array_namespace(scores)
        total = xp.exp(scores[0, :])
        for c in range(1, scores.shape[0]):
            total = total + xp.exp(scores[c, :])
        label = xp.take(cache.target, n)
        score_t = xp.take_along_axis(scores, label[None, :], axis=0)[0, :]
        return -xp.log(xp.exp(score_t) / total + F.LOG_EPS)

    def column_losses(self, cache, delta):
        xp = array_namespace(delta)
        s, n_classes = cache.by_class, cache.by_class.shape[0]
        eye = xp.eye(n_classes, dtype=s.dtype, device=device_of(s))  # (K, C): which class moves
        hits = xp.take(eye, cache.target, axis=1)  # (K, N): k == t_n
        total = xp.exp(s[0, :] + delta * eye[None, None, :, 0, None])
        for c in range(1, n_classes):
            total = total + xp.exp(s[c, :] + delta * eye[None, None, :, c, None])
        score_t = cache.score_t + delta * hits  # (S, J, K, N)
        return -xp.log(xp.exp(score_t) / total + F.LOG_EPS)


class _Separable(Head):
    """A head whose terms are sums over classes of ``term(a_c, t_c)``."""

    def term(self, a, t):
        raise NotImplementedError

    def losses(self, a, t):
        xp = array_namespace(a)
        return xp.sum(self.term(a, t), axis=-1)

    def cache(self, a, t):
        xp = array_namespace(a, t)
        by_class = _contiguous(xp, xp.permute_dims(a, (1, 0)))
        return HeadCache(by_class, _contiguous(xp, xp.permute_dims(t, (1, 0))))

    def row_losses(self, cache, n_idx, dz, w):
        xp = array_namespace(dz, w)
        a = xp.take(cache.by_class, n_idx, axis=1)  # (C, U)
        t = xp.take(cache.target, n_idx, axis=1)
        total = self.term(a[0, None, :, None] + dz * w[0, :], t[0, None, :, None])
        for c in range(1, w.shape[0]):
            total = total + self.term(a[c, None, :, None] + dz * w[c, :], t[c, None, :, None])
        return total

    def class_losses(self, cache, scores, n):
        xp = array_namespace(scores)
        t = xp.take(cache.target, n, axis=1)  # (C, M)
        total = self.term(scores[0, :], t[0, :])
        for c in range(1, scores.shape[0]):
            total = total + self.term(scores[c, :], t[c, :])
        return total

    def column_losses(self, cache, delta):
        # the other classes' terms are bit-identical in f(+) and f(-): only the
        # moved class's term is evaluated (as zero inputs are skipped elsewhere)
        return self.term(cache.by_class + delta, cache.target)

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


HEADS = {head.name: head for head in (Softmax(), Sigmoid(), Identity())}


def get_head(name) -> Head:
    """The head called ``name``; a clear error for an unknown one."""
    if name not in HEADS:
        raise ValueError(f"output={name!r} is not known; expected one of {sorted(HEADS)}")
    return HEADS[name]
