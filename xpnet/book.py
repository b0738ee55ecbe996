"""The book's numerical gradient as the book writes it, in plain NumPy: the
baseline every "x times the loop" of xpnet is measured against.

Rules of this module:

* Host only, plain NumPy, nothing of xpnet's: the forward pass of the book's
  ``TwoLayerNet`` / ``MultiLayerNet`` (affine, sigmoid or ReLU, softmax with the
  cross-entropy error and its ``+1e-7``, weight decay) and the book's
  ``numerical_gradient``: one coordinate at a time, perturbed in place with
  ``h = 1e-4``, two whole forward passes per coordinate.
* It is timed, never used to compute anything xpnet returns. Timing it in full
  takes minutes to hours, so :func:`loop_seconds` times a sample of coordinates
  (every coordinate costs the same two forward passes) and extrapolates, with
  BLAS at one thread (with more, any other load on a small machine makes
  OpenBLAS spin and the loop 10-35x slower: not a reproducible baseline).
"""

from __future__ import annotations

import time

import numpy as np  # host: this module is the book's plain-NumPy code

__all__ = ["BookNet", "numerical_gradient", "loop_seconds"]


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))  # host


def _softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)  # host
    e = np.exp(x)  # host
    return e / np.sum(e, axis=-1, keepdims=True)  # host


def _cross_entropy_error(y, t):
    if t.size == y.size:  # one-hot
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size  # host


class BookNet:
    """The book's network: ``params`` ``W1 b1 ... WL bL`` (host arrays), affine -
    activation - ... - affine - softmax with loss, weight decay
    ``0.5 * lambda * sum ||W||^2``."""

    def __init__(self, params: dict, activation: str = "sigmoid", weight_decay_lambda=0.0):
        self.params = params
        self.activation = (
            _sigmoid if activation == "sigmoid" else (lambda a: np.maximum(0, a))  # host
        )  # host
        self.weight_decay_lambda = weight_decay_lambda
        self.n_layers = len(params) // 2

    def predict(self, x):
        z = x
        for k in range(1, self.n_layers + 1):
            a = np.dot(z, self.params[f"W{k}"]) + self.params[f"b{k}"]  # host
            z = self.activation(a) if k < self.n_layers else a
        return z

    def loss(self, x, t):
        decay = 0.0
        if self.weight_decay_lambda:
            for k in range(1, self.n_layers + 1):
                decay += 0.5 * self.weight_decay_lambda * np.sum(self.params[f"W{k}"] ** 2)  # host
        return _cross_entropy_error(_softmax(self.predict(x)), t) + decay

    def numerical_gradient(self, x, t) -> dict:
        def loss_w(w):
            return self.loss(x, t)

        return {k: numerical_gradient(loss_w, v) for k, v in self.params.items()}


def numerical_gradient(f, x, limit=None):
    """The book's ``numerical_gradient``: ``x`` perturbed in place, one coordinate
    at a time (only the first ``limit`` coordinates when given: for timing)."""
    h = 1e-4
    grad = np.zeros_like(x)  # host
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])  # host
    done = 0
    while not it.finished and (limit is None or done < limit):
        idx = it.multi_index
        tmp_val = x[idx]
        x[idx] = float(tmp_val) + h
        fxh1 = f(x)
        x[idx] = tmp_val - h
        fxh2 = f(x)
        grad[idx] = (fxh1 - fxh2) / (2 * h)
        x[idx] = tmp_val
        it.iternext()
        done += 1
    return grad


def loop_seconds(params: dict, activation, x, t, sample: int, weight_decay_lambda=0.0):
    """Seconds of the book's whole numerical gradient, extrapolated from ``sample``
    timed coordinates of ``W1`` at one BLAS thread.

    Returns ``(seconds, sample)``.
    """
    from threadpoolctl import threadpool_limits

    net = BookNet(
        {k: np.array(v, dtype=np.float64) for k, v in params.items()},  # host
        activation,
        weight_decay_lambda,
    )  # host
    x = np.asarray(x, dtype=np.float64)  # host
    t = np.asarray(t)  # host
    sample = max(1, min(int(sample), net.params["W1"].size))
    with threadpool_limits(limits=1, user_api="blas"):
        net.loss(x, t)  # warm-up
        start = time.perf_counter()
        numerical_gradient(lambda w: net.loss(x, t), net.params["W1"], limit=sample)
        per_coordinate = (time.perf_counter() - start) / sample
    total = sum(int(np.prod(v.shape)) for v in net.params.values())  # host
    return per_coordinate * total, sample
