"""Honest timing on any backend.

Rules of this module: every timed call is followed by a device synchronisation
before the clock is read (:func:`xpnet.device.synchronize`: CuPy stream, torch
CUDA; nothing on the host), after warm-up calls that are not timed; results are
the median, min and max of the repeats. It times; it does not decide what to
time (that is :mod:`xpnet.bench` for ``xpnet bench``, and ``scripts/`` for the
recorded benchmarks).
"""

from __future__ import annotations

import statistics
import time

from .device import synchronize, track_peak_memory

__all__ = ["time_call", "format_duration", "blas_threads"]


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
