"""What ``xpnet bench`` measures: the gradient methods of one network side by side.

Rules of this module: nothing in the library imports it (it serves the ``bench``
command; ``scripts/`` reuse it for the recorded benchmarks, with their machine
records in ``scripts/harness.py``). Every method is timed in the same run with
:func:`xpnet.timing.time_call`. The book's loop is too slow to time in full: it is
timed on a sample of coordinates (every coordinate costs two forward passes,
whichever parameter it belongs to) and extrapolated; rows say so. Agreement with
the loop is measured where the loop is affordable (``b1``, ``W2``, ``b2``); the
tests check ``W1`` on small nets.
"""

from __future__ import annotations

import math
import time

import numpy as np  # host

from .device import synchronize
from .gradient import numerical_gradient
from .timing import format_duration, time_call

__all__ = ["bench_methods", "loop_seconds", "mnist_like_batch", "format_rows"]


def mnist_like_batch(n, d, c=10, *, seed=0, zero_fraction=0.51):
    """Host inputs like 8-bit images (values k/255) with MNIST's share of exact
    zeros (51% for Fashion-MNIST; the zeros cluster on the borders as in real
    digits), and labels."""
    rng = np.random.default_rng(seed)  # host
    side = int(math.isqrt(d))
    x = np.ceil(rng.random((n, d)) * 255) / 255  # host: 1/255 .. 1, like 8-bit pixels
    if side * side == d:
        # zero the pixels far from the centre, with a random radius per image
        yy, xx = np.mgrid[:side, :side]  # host
        dist = np.hypot(yy - (side - 1) / 2, xx - (side - 1) / 2).ravel()  # host
        radius = np.quantile(dist, 1 - zero_fraction) * rng.uniform(0.85, 1.15, (n, 1))  # host
        x[dist[None, :] > radius] = 0.0
    else:
        x[rng.random((n, d)) < zero_fraction] = 0.0
    return x, rng.integers(0, c, n)


def loop_seconds(net, x, labels, sample: int) -> tuple[float, int]:
    """Seconds of the book's loop, extrapolated from ``sample`` timed coordinates."""
    xp = net.xp
    params = net._params()
    b1 = xp.asarray(params["b1"], copy=True)

    def f(w):
        return net.loss_batched(x, labels, "b1", w[None, ...], params=params)[0]

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
    data=None,
    methods=("structured", "complex", "batched", "backprop"),
    log=None,
) -> list[dict]:
    """Time the gradient methods of one network side by side, in one run.

    ``data``: host ``(x, t)`` to take the first ``batch`` rows of; default
    :func:`mnist_like_batch`.

    Returns one dict per method: ``method``, timing (``median_s``...), ``speedup``
    over the loop measured in this run, ``peak_bytes`` (extra memory of one call),
    ``rel_vs_loop`` (worst normwise difference from the loop on b1, W2, b2).
    ``log``, if given, receives a line as each method starts and ends.
    """
    from .network import TwoLayerNet

    say = log or (lambda line: None)

    net = TwoLayerNet(*sizes, backend=backend, device=device, dtype=dtype, seed=seed)
    xp = net.xp
    if data is None:
        x_host, t_host = mnist_like_batch(batch, sizes[0], sizes[2], seed=seed)
    else:
        x_host, t_host = data[0][:batch], data[1][:batch]
    x, labels = net._batch(x_host, t_host)
    say(f"loop: timing {loop_sample} coordinates ...")
    loop_s, timed = loop_seconds(net, x, labels, loop_sample)
    say(f"loop: {format_duration(loop_s)} per gradient (extrapolated from {timed} coordinates)")
    reference = {}
    params = net._params()
    for name in ("b1", "W2", "b2"):
        reference[name] = numerical_gradient(
            lambda w, name=name: net.loss_batched(x, labels, name, w[None, ...], params=params)[0],
            xp.asarray(params[name], copy=True),
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

        say(f"{method}: timing {repeats} repeats ...")
        try:
            stats = time_call(call, xp=xp, device=net.device, repeats=repeats, memory=True)
        except (TypeError, ValueError, RuntimeError) as exc:
            rows.append({"method": method, "error": str(exc)})
            say(f"{method}: error: {exc}")
            continue
        say(f"{method}: {format_duration(stats['median_s'])} median")
        grads = stats.pop("result")
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
        "zero_fraction": float(xp.mean(xp.astype(x == 0, net.dtype))),
    }
    return [{**meta, **row} for row in rows]


def format_rows(rows) -> str:
    """A text table of :func:`bench_methods` rows."""
    head = (
        f"{'backend':<18} {'method':<11} {'median':>11} {'min':>11} {'vs loop':>9} "
        f"{'peak MiB':>9} {'rel vs loop':>12}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        name = f"{r['backend']}:{r['device']}"
        if "error" in r:
            lines.append(f"{name:<18} {r['method']:<11} error: {r['error']}")
            continue
        peak = "-" if r.get("peak_bytes") is None else f"{r['peak_bytes'] / 2**20:.1f}"
        lines.append(
            f"{name:<18} {r['method']:<11} {format_duration(r['median_s']):>11} "
            f"{format_duration(r['min_s']):>11} {r['speedup']:>8.1f}x {peak:>9} "
            f"{r['rel_vs_loop']:>12.1e}  {r.get('note', '')}"
        )
    return "\n".join(lines)
