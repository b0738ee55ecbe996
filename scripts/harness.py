"""What the benchmark scripts share: the machine record every JSON carries, and
the backends a script runs on.

Rules of this module: it lives with the scripts, not in the library (the
scripts put their own folder on ``sys.path``); it reads the machine, it times
nothing (timing is :mod:`xpnet.timing`, the compared methods :mod:`xpnet.bench`).
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from xpnet.backend import BACKENDS, library_version, resolve_backend
from xpnet.device import device_name
from xpnet.procs import PARALLEL_VARIABLE
from xpnet.timing import blas_threads

__all__ = ["machine_info", "available_backends", "parse_backends", "parallel_ceiling"]


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
    found = []
    for name in names:
        devices = [None]
        if name == "torch":
            devices = ["cpu", "cuda"]
        for device in devices:
            try:
                backend = resolve_backend(name, device)
                with backend.activate():
                    # a CUDA context, or the error that says why not
                    backend.xp.zeros(1, device=backend.device)
            except Exception:  # noqa: BLE001 - any failure means: not available here
                continue
            found.append((name, device))
    return found


def parse_backends(spec: str) -> list[tuple[str, object]]:
    """``"auto"`` (every backend present) or ``"numpy,torch:cuda,cupy:0"``."""
    if spec == "auto":
        return available_backends()
    pairs = []
    for item in spec.split(","):
        name, _, device = item.partition(":")
        pairs.append((name, device or None))
    return pairs


def _kernel(repeats: int = 200, elements: int = 2**19) -> float:
    """Seconds of a fixed NumPy kernel (exp and a multiply on ``elements``
    doubles, 4 MiB by default, in place): what one core does when nothing else
    runs on it."""
    import numpy as np

    a = np.linspace(0.0, 1.0, elements)
    out = np.empty_like(a)
    start = time.perf_counter()
    for _ in range(repeats):
        np.exp(a, out=out)
        out *= a
    return time.perf_counter() - start


def parallel_ceiling(n: int, repeats: int = 200, elements: int = 2**19) -> dict:
    """The machine's parallel ceiling for ``n`` workers, measured now: the
    throughput of ``n`` processes (and of ``n`` threads) running the same fixed
    NumPy kernel at once, as a multiple of one alone. Virtual CPUs that share a
    physical core, or a loaded host, give less than ``n``. ``op_us``: one
    operation of the kernel alone, in microseconds (threads gain only where
    operations are long enough to cover handing the GIL over)."""
    one = _kernel(repeats, elements)
    op_us = one / (2 * repeats) * 1e6
    if n <= 1:
        return {"n": 1, "processes": 1.0, "threads": 1.0, "op_us": op_us}
    with ProcessPoolExecutor(n) as pool:
        list(pool.map(_kernel, [5] * n))  # start the workers
        start = time.perf_counter()
        list(pool.map(_kernel, [repeats] * n, [elements] * n))
        processes = n * one / (time.perf_counter() - start)
    with ThreadPoolExecutor(n) as pool:
        start = time.perf_counter()
        list(pool.map(_kernel, [repeats] * n, [elements] * n))
        threads = n * one / (time.perf_counter() - start)
    return {"n": n, "processes": processes, "threads": threads, "op_us": op_us}


def on_threads(call):
    """``call`` with xpnet's host work on threads, not helper processes
    (``$XPNET_PARALLEL=threads`` while it runs)."""

    def wrapped(*args):
        before = os.environ.get(PARALLEL_VARIABLE)
        os.environ[PARALLEL_VARIABLE] = "threads"
        try:
            return call(*args)
        finally:
            if before is None:
                del os.environ[PARALLEL_VARIABLE]
            else:
                os.environ[PARALLEL_VARIABLE] = before

    return wrapped
