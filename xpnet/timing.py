"""Honest timing on any backend.

Rules of this module:

* Every timed call is followed by a device synchronisation before the clock is
  read (:func:`xpnet.device.synchronize`: CuPy stream, torch CUDA; nothing on the
  host), after warm-up calls that are not timed. Results are the median, min and
  max of the repeats.
* The book's loop is too slow to time in full: it is timed on a sample of
  coordinates (every coordinate costs two forward passes, whichever parameter it
  belongs to) and extrapolated; rows say so.
* Agreement with the loop is measured where the loop is affordable (``b1``,
  ``W2``, ``b2``); the tests check ``W1`` on small nets.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import time

import numpy as np  # host

from .device import synchronize, track_peak_memory
from .gradient import numerical_gradient

__all__ = [
    "time_call",
    "bench_methods",
    "loop_seconds",
    "mnist_like_batch",
    "machine_info",
    "available_backends",
    "parse_backends",
    "format_rows",
]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(backends=()) -> dict:
    """CPU model and core count, GPU names, library versions and the date (UTC)."""
    from .backend import BACKENDS, library_version, resolve_backend
    from .device import device_name

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {n: library_version(n) for n in BACKENDS if library_version(n)},
        "blas_threads": blas_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "devices": {},
    }
    for name, device in backends:
        try:
            b = resolve_backend(name, device)
            info["devices"][f"{name}:{device or 'default'}"] = device_name(b.xp, b.device)
        except (ImportError, ValueError, RuntimeError):
            continue
    return info


def available_backends(names=("numpy", "torch", "cupy")) -> list[tuple[str, object]]:
    """(backend, device) pairs that work here: numpy, torch CPU (+ CUDA), cupy."""
    from .backend import resolve_backend

    found = []
    for name in names:
        devices = [None]
        if name == "torch":
            devices = ["cpu", "cuda"]
        for device in devices:
            try:
                resolve_backend(name, device)
                if name == "cupy":
                    import cupy

                    cupy.zeros(1)  # a CUDA context, or the error that says why not
            except Exception:  # noqa: BLE001 - any failure means: not available here
                continue
            found.append((name, device))
    return found


def time_call(fn, *, xp=None, device=None, warmup=1, repeats=5, memory=False) -> dict:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    With ``memory=True`` the first warm-up call also measures the peak extra
    memory (:func:`xpnet.device.track_peak_memory`).

    Returns
    -------
    dict
        ``median_s``, ``min_s``, ``max_s``, ``times_s`` (list), ``repeats``, and
        with ``memory``: ``peak_bytes``, ``peak_how``, ``result`` (of that call).
    """
    extra = {}
    for i in range(warmup):
        if memory and i == 0:
            result, peak, how = track_peak_memory(xp, device, fn)
            extra = {"peak_bytes": peak, "peak_how": how, "result": result}
        else:
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
        **extra,
    }


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


def parse_backends(spec: str) -> list[tuple[str, object]]:
    """``"auto"`` (every backend present) or ``"numpy,torch:cuda,cupy:0"``."""
    if spec == "auto":
        return available_backends()
    pairs = []
    for item in spec.split(","):
        name, _, device = item.partition(":")
        pairs.append((name, device or None))
    return pairs


def format_duration(seconds: float) -> str:
    """``17.3 s``, ``51.4 ms`` or ``0.70 ms``: seconds shown in the unit that reads."""
    if seconds >= 1.0:
        return f"{seconds:.1f} s"
    if seconds >= 0.01:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e3:.2f} ms"


def blas_threads() -> str:
    """The BLAS/OpenMP thread pools of this process, e.g. ``openblas 1``."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return "unknown (threadpoolctl not installed)"
    pools = [f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info()]
    return ", ".join(pools) or "none loaded"


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
