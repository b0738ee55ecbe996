"""Honest timing on any backend.

Rules of this module:

* Every timed call is followed by a device synchronisation before the clock is
  read (:func:`xpnet.backend.synchronize`: CuPy stream, torch CUDA; nothing on the
  host), after warm-up calls that are not timed. Results are the median, min and
  max of the repeats.
* The book's loop is too slow to time in full: it is timed on a sample of
  coordinates (every coordinate costs two forward passes, whichever parameter it
  belongs to) and extrapolated; rows say so.
* Agreement with the loop is measured where the loop is affordable (``b1``,
  ``W2``, ``b2``); the tests check ``W1`` on small nets.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np  # host

from .backend import synchronize, track_peak_memory
from .gradient import numerical_gradient

__all__ = ["time_call", "bench_methods", "mnist_like_batch"]


def time_call(fn, *, xp=None, device=None, warmup=1, repeats=5) -> dict:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Returns
    -------
    dict
        ``median_s``, ``min_s``, ``max_s``, ``times_s`` (list), ``repeats``.
    """
    for _ in range(warmup):
        fn()
        if xp is not None:
            synchronize(xp, device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if xp is not None:
            synchronize(xp, device)
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        "repeats": repeats,
    }


def mnist_like_batch(n, d, c=10, *, seed=0, zero_fraction=0.51):
    """Host inputs with MNIST's share of exact zeros (51% for Fashion-MNIST; the
    zeros cluster on the borders as in real digits) and labels."""
    rng = np.random.default_rng(seed)
    side = int(math.isqrt(d))
    x = rng.random((n, d))
    if side * side == d:
        # zero the pixels far from the centre, with a random radius per image
        yy, xx = np.mgrid[:side, :side]
        dist = np.hypot(yy - (side - 1) / 2, xx - (side - 1) / 2).ravel()
        radius = np.quantile(dist, 1 - zero_fraction) * rng.uniform(0.85, 1.15, (n, 1))
        x[dist[None, :] > radius] = 0.0
    else:
        x[rng.random((n, d)) < zero_fraction] = 0.0
    return x, rng.integers(0, c, n)


def _loop_seconds(net, x, labels, sample: int) -> tuple[float, int]:
    """Seconds of the book's loop, extrapolated from ``sample`` timed coordinates."""
    xp = net.xp
    params = net._params()
    b1 = xp.asarray(params["b1"], copy=True)

    def f(w):
        return net.loss_batched(x, labels, "b1", w[None, ...])[0]

    timed = 0
    start = time.perf_counter()
    while timed < sample:
        numerical_gradient(f, b1, h=1e-4)
        timed += b1.shape[0]
    synchronize(xp, net.device)
    per_coordinate = (time.perf_counter() - start) / timed
    total = sum(math.prod(v.shape) for v in params.values())
    return per_coordinate * total, timed


def bench_methods(
    *,
    backend="numpy",
    device=None,
    dtype="float64",
    sizes=(784, 50, 10),
    batch=100,
    repeats=5,
    loop_sample=200,
    seed=0,
    methods=("structured", "complex", "batched", "backprop"),
) -> list[dict]:
    """Time the gradient methods of one network side by side, in one run.

    Returns one dict per method: ``method``, timing (``median_s``...), ``speedup``
    over the loop measured in this run, ``peak_bytes`` (extra memory of one call),
    ``rel_vs_loop`` (worst normwise difference from the loop on b1, W2, b2).
    """
    from .network import TwoLayerNet

    net = TwoLayerNet(*sizes, backend=backend, device=device, dtype=dtype, seed=seed)
    xp = net.xp
    x_host, t_host = mnist_like_batch(batch, sizes[0], sizes[2], seed=seed)
    x, labels = net._batch(x_host, t_host)
    loop_s, timed = _loop_seconds(net, x, labels, loop_sample)
    reference = {}
    for name in ("b1", "W2", "b2"):
        value = xp.asarray(net._params()[name], copy=True)
        reference[name] = numerical_gradient(
            lambda w, name=name: net.loss_batched(x, labels, name, w[None, ...])[0], value
        )
    rows = [
        {
            "method": "loop",
            "median_s": loop_s,
            "min_s": loop_s,
            "max_s": loop_s,
            "speedup": 1.0,
            "peak_bytes": None,
            "rel_vs_loop": 0.0,
            "note": f"extrapolated from {timed} timed coordinates",
        }
    ]
    for method in methods:
        if method == "backprop":

            def call():
                return net.gradient(x, labels)
        else:

            def call(method=method):
                return net.numerical_gradient(x, labels, method=method)

        try:
            stats = time_call(call, xp=xp, device=net.device, repeats=repeats)
        except (TypeError, ValueError, RuntimeError) as exc:
            rows.append({"method": method, "error": str(exc)})
            continue
        grads, peak, how = track_peak_memory(xp, net.device, call)
        rel = max(
            float(xp.linalg.vector_norm(grads[k] - reference[k]))
            / max(float(xp.linalg.vector_norm(reference[k])), 1e-300)
            for k in reference
        )
        rows.append(
            {
                "method": method,
                **stats,
                "speedup": loop_s / stats["median_s"],
                "peak_bytes": peak,
                "peak_how": how,
                "rel_vs_loop": rel,
                "note": "analytic" if method == "backprop" else "",
            }
        )
    meta = {
        "backend": net.backend.name,
        "device": str(net.device),
        "dtype": dtype,
        "sizes": list(sizes),
        "batch": batch,
    }
    return [{**meta, **row} for row in rows]
