"""What ``xpnet bench`` measures: the gradient methods of one network side by side.

Rules of this module: nothing in the library imports it (it serves the ``bench``
command; ``scripts/`` reuse it for the recorded benchmarks, with their machine
records in ``scripts/harness.py``). Every method is timed in the same run with
:func:`xpnet.timing.time_call`. The baseline of every ratio is the book's loop as
the book writes it (:mod:`xpnet.book`: plain NumPy, one BLAS thread), too slow to
time in full: it is timed on a sample of coordinates and extrapolated, and the
rows say so. Agreement with xpnet's own loop (``method="loop"``) is measured
where that loop is affordable (``b1``, ``W2``, ``b2``); the tests check ``W1`` on
small nets.
"""

from __future__ import annotations

import math

import numpy as np  # host

from . import book, model, procs
from .backend import is_numpy, to_numpy
from .device import host_threads
from .gradient import numerical_gradient
from .timing import format_duration, time_call

__all__ = ["bench_methods", "mnist_like_batch", "format_rows"]


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
    :func:`mnist_like_batch`. Returns one dict per method: ``method``, timing
    (``median_s``...), ``speedup`` over the loop measured in this run,
    ``peak_bytes`` (extra memory of one call in this process; helper processes
    hold their own blocks besides), ``rel_vs_loop`` (worst normwise difference
    from the loop on b1, W2, b2). ``log`` gets a line as each method starts, ends.
    """
    from .two_layer import TwoLayerNet

    say = log or (lambda line: None)
    net = TwoLayerNet(*sizes, backend=backend, device=device, dtype=dtype, seed=seed)
    xp = net.xp
    helpers = host_threads() - 1 if is_numpy(xp) else 0
    procs.helpers(helpers)  # started now: ready before the first timed method
    if data is None:
        x_host, t_host = mnist_like_batch(batch, sizes[0], sizes[2], seed=seed)
    else:
        x_host, t_host = data[0][:batch], data[1][:batch]
    chosen = net.batch(x_host, t_host)
    layers = net.checked_layers()
    say(f"the book's loop: timing {loop_sample} coordinates ...")
    host = {k: to_numpy(v) for k, v in model.params_of(layers).items()}
    loop_s, timed = book.loop_seconds(
        host, net.activation, to_numpy(chosen.x), to_numpy(chosen.t), loop_sample
    )
    say(f"the book's loop: {format_duration(loop_s)} per gradient (extrapolated)")
    reference = _reference(net, layers, chosen)
    note = (
        f"the book's loop (plain NumPy, 1 BLAS thread), extrapolated from {timed} timed coordinates"
    )
    loop = {"median_s": loop_s, "min_s": loop_s, "max_s": loop_s, "speedup": 1.0}
    rows = [{"method": "loop", **loop, "peak_bytes": None, "rel_vs_loop": 0.0, "note": note}]
    procs.helpers(helpers, wait=True)
    for method in methods:
        rows.append(_timed(net, chosen, method, repeats, reference, loop_s, say))
    meta = {
        "backend": net.backend.name,
        "device": str(net.device),
        "dtype": dtype,
        "sizes": list(sizes),
        "batch": batch,
        "zero_fraction": float(xp.mean(xp.astype(chosen.x == 0, net.dtype))),
    }
    return [{**meta, **row} for row in rows]


def _reference(net, layers, chosen) -> dict:
    """xpnet's one-weight loop on ``b1``, ``W2``, ``b2`` (affordable there): what
    every timed method is compared with."""
    xp = net.xp
    reference = {}
    for index, which in ((0, "b"), (1, "W"), (1, "b")):
        value = layers[index][0 if which == "W" else 1]
        reference[f"{which}{index + 1}"] = numerical_gradient(
            lambda w, i=index, k=which: model.stacked_loss(
                net.spec, layers, chosen, i, k, w[None, ...]
            )[0],
            xp.asarray(value, copy=True),
        )
    return reference


def _timed(net, chosen, method, repeats, reference, loop_s, say) -> dict:
    """One method's row: timing, speed-up over the loop, agreement with it."""
    xp = net.xp
    if method == "backprop":

        def call():
            return net.gradient(chosen.x, chosen.t)
    else:

        def call():
            return net.numerical_gradient(chosen.x, chosen.t, method=method)

    say(f"{method}: timing {repeats} repeats ...")
    try:
        stats = time_call(call, xp=xp, device=net.device, repeats=repeats, memory=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        say(f"{method}: error: {exc}")
        return {"method": method, "error": str(exc)}
    say(f"{method}: {format_duration(stats['median_s'])} median")
    grads = stats.pop("result")
    rel = max(
        float(xp.linalg.vector_norm(grads[k] - reference[k]))
        / max(float(xp.linalg.vector_norm(reference[k])), 1e-300)
        for k in reference
    )
    return {
        "method": method,
        **stats,
        "speedup": loop_s / stats["median_s"],
        "rel_vs_loop": rel,
        "note": "analytic" if method == "backprop" else "",
    }


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
