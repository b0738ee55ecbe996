"""What the benchmark scripts share: the machine record every JSON carries, the
backends a script runs on, the machine's parallel ceiling and a speed-up's
share of it.

Rules of this module: it lives with the scripts, not in the library (the
scripts put their own folder on ``sys.path``); it reads the machine (the
ceiling by timing a fixed NumPy kernel), never xpnet (timing is
:mod:`xpnet.timing`, the compared methods :mod:`xpnet.bench`).
"""

from __future__ import annotations

import atexit
import datetime
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from xpnet.backend import BACKENDS, library_version, resolve_backend
from xpnet.device import device_name
from xpnet.procs import PARALLEL_VARIABLE
from xpnet.timing import blas_threads

__all__ = ["KERNELS", "machine_info", "available_backends", "parse_backends", "parallel_ceiling"]


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


#: Kinds of the fixed kernel: ``exp`` (the ceiling's: an exp and a multiply,
#: arithmetic-heavy) and ``stream`` (a multiply and an add: little arithmetic
#: per byte moved, like most of a structured gradient's passes).
KERNELS = ("exp", "stream")


def _timed_kernel(
    start: float, repeats: int, elements: int, kind: str = "exp"
) -> tuple[float, float]:
    """A fixed NumPy kernel of ``kind`` (:data:`KERNELS`) on ``elements``
    doubles (4 MiB by default), in place, ``repeats`` times, begun at ``start``
    (``time.perf_counter``'s clock, which every process of the machine shares):
    its ``(begin, end)``. What one core does when nothing else runs on it."""
    import numpy as np

    a = np.linspace(0.0, 1.0, elements)
    b = a[::-1].copy() if kind == "stream" else None  # the ceiling's kernel as it was
    out = np.empty_like(a)
    np.exp(a, out=out)  # the pages touched before the clock starts
    while time.perf_counter() < start:
        pass
    begin = time.perf_counter()
    for _ in range(repeats):
        if kind == "exp":
            np.exp(a, out=out)
            out *= a
        else:
            np.multiply(a, b, out=out)
            out += a
    return begin, time.perf_counter()


_POOLS: dict = {}  # (workers, n): a kept executor, warm


def _pool(workers: str, n: int):
    pool = _POOLS.get((workers, n))
    if pool is None:
        pool = (ProcessPoolExecutor if workers == "processes" else ThreadPoolExecutor)(n)
        list(pool.map(time.sleep, [0.2] * n))  # every worker started before any timing
        _POOLS[(workers, n)] = pool
    return pool


@atexit.register
def _shut_pools():
    for pool in _POOLS.values():
        pool.shutdown(wait=False, cancel_futures=True)
    _POOLS.clear()


def _ratio(pool, n: int, repeats: int, elements: int, kind: str) -> tuple[float, float]:
    """One alone, then ``n`` at once, in the same kind of worker, each begun at
    an agreed moment (no dispatch in the timing): the throughput of ``n`` over
    one's, and the one's seconds."""
    lead = 0.02  # s: enough for every worker to receive its task first
    task = (repeats, elements, kind)
    begin, end = pool.submit(_timed_kernel, time.perf_counter() + lead, *task).result()
    alone = end - begin
    spans = list(
        pool.map(_timed_kernel, [time.perf_counter() + lead] * n, *([v] * n for v in task))
    )
    together = max(e for _, e in spans) - min(b for b, _ in spans)
    return n * alone / together, alone


def parallel_ceiling(
    n: int, repeats: int = 200, elements: int = 2**19, pairs: int = 5, kind: str = "exp"
) -> dict:
    """The machine's parallel ceiling for ``n`` workers, measured now: the
    throughput of ``n`` processes (and of ``n`` threads) running the same fixed
    NumPy kernel at once, as a multiple of one alone. Virtual CPUs that share a
    physical core, or a loaded host, give less than ``n``. ``op_us``: one
    operation of the kernel alone, in microseconds (threads gain only where
    operations are long enough to cover handing the GIL over). ``kind``: the
    kernel (:data:`KERNELS`); the ceiling that speed-ups are reported against
    is ``exp``'s, the other tells how the machine shares moving memory.

    Each ceiling is the median of ``pairs`` measurements (one alone, then ``n``
    at once, in kept, warm workers of the same kind), each worker timing its own
    kernel from an agreed start, so that neither starting workers nor handing
    out the tasks is timed. Measured once, in fresh workers and with the
    hand-out in the time (as this function did until 2026-12-03), the ceiling of
    two workers read from 0.70 to 3.14 here (bench_depth's records) and low: 20
    calls of each way, interleaved, gave a median of 1.70 (1.12-2.00) that way
    and 1.81 (1.66-1.96) this way (docs/benchmarks.md).
    """
    if kind not in KERNELS:
        raise ValueError(f"kind must be one of {KERNELS}, got {kind!r}")
    if n <= 1:
        alone = _timed_kernel(time.perf_counter(), repeats, elements, kind)
        op_us = (alone[1] - alone[0]) / (2 * repeats) * 1e6
        return {"n": 1, "processes": 1.0, "threads": 1.0, "op_us": op_us}
    out: dict = {"n": n}
    ones = []
    for workers in ("processes", "threads"):
        pool = _pool(workers, n)
        measured = [_ratio(pool, n, repeats, elements, kind) for _ in range(max(1, pairs))]
        out[workers] = statistics.median(r for r, _ in measured)
        out[f"{workers}_pairs"] = [r for r, _ in measured]
        ones += [one for _, one in measured]
    out["op_us"] = statistics.median(ones) / (2 * repeats) * 1e6
    return out


def share_of_ceiling(one, many, ceilings, pairs=()) -> dict:
    """The parallel speed-up's share of the machine's ceiling, round by round:
    ``(one[r] / many[r]) / ceilings[r]`` (times on one core and on every core,
    and that round's ceiling), and their median, which a disturbed minority of
    rounds (high or low) does not move far.

    A share above 1, a speed-up beyond the ceiling measured beside it, is
    either the noise of the two measurements (a speed-up at the ceiling reads
    above 1 in about half the rounds) or a ceiling that failed (on this VM, two
    processes of the ceiling's kernel once ran at 0.9x one for a whole run while
    the gradient's two processes ran at 1.5x). ``ceiling_spread`` tells them
    apart: half the interquartile range of the ceiling's own measurements
    (``pairs``, every pair of every round) over their median. A median share
    within ``1 + ceiling_spread`` is kept (at the ceiling, to within what the
    ceiling itself can tell); above it, the share is None: not measured. Rounds
    above 1 are counted in ``rounds_above_ceiling``.
    """
    per_round = [(a / b) / c for a, b, c in zip(one, many, ceilings, strict=True)]
    share = statistics.median(per_round)
    spread = 0.0
    if len(pairs) >= 4:
        low, _, high = statistics.quantiles(pairs, n=4)
        spread = (high - low) / 2 / statistics.median(pairs)
    return {
        "share": share if share <= 1.0 + spread else None,
        "per_round": per_round,
        "rounds_above_ceiling": sum(s > 1.0 for s in per_round),
        "ceiling_spread": spread,
    }


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
