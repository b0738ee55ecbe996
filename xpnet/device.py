"""Device handling, in one small module (the role DeZero's ``cuda.py`` plays).

Rules of this module:

* Everything that only a device shows lives here: free memory, the library's
  out-of-memory error types, synchronisation of the right device, peak-memory
  tracking, the device's name, and the BLAS thread limit of host work. The
  device *context* (CuPy's current device) is :meth:`xpnet.Backend.activate`;
  :func:`computing_on` joins the two for every public computation.
* Like :mod:`xpnet.backend`, it names array libraries (CuPy, torch) and imports
  them lazily, only when their namespace is the one in use; every function takes
  ``xp`` (and the device) explicitly.
* Nothing here computes on arrays; it never moves data.
"""

from __future__ import annotations

import contextlib
import os
import threading

import array_api_compat

from .backend import host_namespace, is_numpy
from .checks import positive_int

__all__ = [
    "free_memory",
    "out_of_memory_errors",
    "synchronize",
    "track_peak_memory",
    "device_name",
    "single_blas_thread",
    "computing_on",
    "host_threads",
    "tune_host_allocator",
    "THREADS_VARIABLE",
    "ALLOCATOR_VARIABLE",
]

#: Environment variable that caps the threads of host work (the numerical gradient).
THREADS_VARIABLE = "XPNET_NUM_THREADS"
#: Set to 0 to keep glibc's malloc settings as they are (:func:`tune_host_allocator`).
ALLOCATOR_VARIABLE = "XPNET_TUNE_MALLOC"

_ALLOCATOR: dict[str, bool | None] = {"tuned": None}


def tune_host_allocator() -> bool:
    """Keep freed host memory for reuse instead of returning it to the kernel at
    once (glibc's malloc on Linux only; once per process).

    NumPy takes every array of more than 128 KiB from glibc's malloc, which by
    default maps fresh pages for it and unmaps them when it is freed (until a
    freed mapping raises the threshold), and every fresh page faults: on one
    thread the book net's structured gradient took 17-19 ms instead of 11-13 ms
    (docs/benchmarks.md). In a process with several threads every unmap also
    interrupts the other threads' cores (a TLB shootdown): two threads of the
    structured gradient ran barely faster than one (1.02x on the book's net)
    where two processes ran 1.96x. The structured gradient calls this on the
    host, whatever its thread count. This sets ``M_MMAP_THRESHOLD`` to 32 MiB and
    ``M_TRIM_THRESHOLD`` to 256 MiB (``mallopt``), so that arrays up to 32 MiB come
    from the heap and up to 256 MiB of freed memory stays with the process for
    the next chunk. Nothing is done where the user has set glibc's own
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``, or
    ``XPNET_TUNE_MALLOC=0``.

    Returns
    -------
    bool
        Whether the settings are in effect (from this call or an earlier one).
    """
    if _ALLOCATOR["tuned"] is not None:
        return _ALLOCATOR["tuned"]
    tuned = False
    user_set = any(
        os.environ.get(name) for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    )
    if os.environ.get(ALLOCATOR_VARIABLE, "1").strip() != "0" and not user_set:
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            # glibc's parameter numbers: M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD -3
            tuned = bool(libc.mallopt(-3, 32 * 2**20)) and bool(libc.mallopt(-1, 256 * 2**20))
        except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
            tuned = False
    _ALLOCATOR["tuned"] = tuned
    return tuned


def host_threads(requested=None) -> int:
    """Threads for host (NumPy) work: ``requested`` if given, else the cores this
    process may run on (``os.sched_getaffinity``), capped by ``$XPNET_NUM_THREADS``.

    Raises
    ------
    ValueError
        ``requested`` or ``$XPNET_NUM_THREADS`` is not a positive integer.
    """
    if requested is not None:
        return positive_int("n_threads", requested)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cap = os.environ.get(THREADS_VARIABLE, "").strip()
    if cap:
        if not cap.isdigit() or int(cap) < 1:
            raise ValueError(f"${THREADS_VARIABLE} must be a positive integer, got {cap!r}")
        cores = min(cores or 1, int(cap))
    return max(1, cores or 1)


def free_memory(xp, device) -> int | None:
    """Free bytes on ``device`` where the backend exposes it (GPUs), else None."""
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        with cupy.cuda.Device(getattr(device, "id", device)):
            free, _total = cupy.cuda.runtime.memGetInfo()
        pool = cupy.get_default_memory_pool()
        return int(free + pool.free_bytes())
    if array_api_compat.is_torch_namespace(xp) and getattr(device, "type", "") == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return None


def out_of_memory_errors(xp) -> tuple[type[BaseException], ...]:
    """Exception types that mean "this chunk did not fit in memory"."""
    errors: list[type[BaseException]] = [MemoryError]
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        errors.append(cupy.cuda.memory.OutOfMemoryError)
    if array_api_compat.is_torch_namespace(xp):
        import torch

        errors.append(torch.OutOfMemoryError)
    return tuple(errors)


class _CupyPeak:
    """CuPy memory hook that records the peak of bytes held by the pool."""

    def __init__(self):
        import cupy

        class Hook(cupy.cuda.MemoryHook):
            name = "xpnet-peak"

            def __init__(hook):
                hook.current = hook.peak = 0

            def malloc_postprocess(hook, device_id, size, mem_size, mem_ptr, pmem_id):
                hook.current += mem_size
                hook.peak = max(hook.peak, hook.current)

            def free_postprocess(hook, device_id, mem_size, mem_ptr, pmem_id):
                hook.current -= mem_size

        self.hook = Hook()


def track_peak_memory(xp, device, fn):
    """Run ``fn()``; return ``(result, peak_extra_bytes or None, how)``.

    CuPy: bytes allocated through its memory pool (a memory hook). torch CUDA:
    ``torch.cuda.max_memory_allocated``. NumPy and array-api-strict: tracemalloc
    (NumPy reports its buffers to it). Other backends: None.
    """
    if xp is None:  # plain host code
        xp = host_namespace()
    if array_api_compat.is_cupy_namespace(xp):
        peak = _CupyPeak().hook
        with peak:
            result = fn()
        return result, peak.peak, "cupy memory hook"
    if array_api_compat.is_torch_namespace(xp) and getattr(device, "type", "") == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result = fn()
        return result, torch.cuda.max_memory_allocated(device) - base, "torch.cuda"
    if array_api_compat.is_numpy_namespace(xp) or xp.__name__ == "array_api_strict":
        import tracemalloc

        tracemalloc.start()
        try:
            result = fn()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return result, peak, "tracemalloc"
    return fn(), None, "not measured"


def device_name(xp, device) -> str:
    """Human-readable name of ``device`` (GPU model for CUDA devices)."""
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        dev_id = getattr(device, "id", device) or 0
        return cupy.cuda.runtime.getDeviceProperties(dev_id)["name"].decode()
    if array_api_compat.is_torch_namespace(xp) and getattr(device, "type", "") == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return "cpu"


class _BlasLimit:
    """NumPy's BLAS at one thread while any thread of this process is inside
    :func:`single_blas_thread`: the first to enter sets the limit, the last to
    leave restores the library's own count, whichever threads they are. (A limit
    per call let the first caller to finish restore two BLAS threads under
    another one still computing.)

    Recent threadpoolctl lets only one "controlling" thread set OpenBLAS's
    process-wide count and silently ignores the others: every change here is
    made with no thread in control before or after it (its documented
    ``OpenBLASController.clear_controlling_thread(force=True)``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.libraries: list | None = None  # threadpoolctl's BLAS controllers, found on first use
        self.changed: list = []  # (library, its own count) set to 1, while depth > 0

    def enter(self):
        with self.lock:
            if self.depth == 0:
                if self.libraries is None:  # after NumPy's BLAS loaded
                    from threadpoolctl import ThreadpoolController

                    found = ThreadpoolController().lib_controllers
                    self.libraries = [lib for lib in found if lib.user_api == "blas"]
                # each library asked and set directly: threadpoolctl's limit()
                # gathers every library's whole info twice a call (0.13 ms with
                # cold caches, as a gradient after other work finds them)
                counts = [(lib, lib.get_num_threads()) for lib in self.libraries]
                self.changed = [(lib, n) for lib, n in counts if n is not None and n != 1]
                if self.changed:
                    _uncontrolled(lambda: [lib.set_num_threads(1) for lib, _ in self.changed])
            self.depth += 1

    def leave(self):
        with self.lock:
            self.depth -= 1
            if self.depth == 0 and self.changed:
                changed, self.changed = self.changed, []
                _uncontrolled(lambda: [lib.set_num_threads(n) for lib, n in changed])

    def forked(self):
        """In a forked child: no thread is inside any more (the BLAS count stays
        as the fork left it); the lock may have been held by one that is gone."""
        self.lock = threading.Lock()
        self.depth = 0
        self.changed = []


def _uncontrolled(change):
    """``change()`` with no thread controlling OpenBLAS before or after it."""
    import threadpoolctl

    openblas = getattr(threadpoolctl, "OpenBLASController", None)
    clear = getattr(openblas, "clear_controlling_thread", None)
    if clear is None:  # an older threadpoolctl: any thread may set the count
        return change()
    clear(force=True)
    try:
        return change()
    finally:
        clear(force=True)


_BLAS = _BlasLimit()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_BLAS.forked)


@contextlib.contextmanager
def _one_blas_thread():
    _BLAS.enter()
    try:
        yield
    finally:
        _BLAS.leave()


def single_blas_thread(xp):
    """Context manager: one BLAS thread while NumPy work runs inside it (restored
    after the last thread inside it leaves). xpnet's matrix products are small (a
    batch by widths of hundreds): on a busy 2-core machine OpenBLAS's second
    thread measured 2x slower for the numerical gradient and up to 25x for
    backprop; on an idle one backprop gained ~20% from it, but OpenBLAS's workers
    then spin for a while after each call, and a threaded numerical gradient right
    after ran 1.7x slower (52 against 31 ms on the book's net;
    docs/benchmarks.md). Every public method of a network, training and gradient
    checks run inside it, from any number of threads at once. Other backends
    manage their own threads: a no-op there."""
    if not is_numpy(xp):
        return contextlib.nullcontext()
    return _one_blas_thread()


@contextlib.contextmanager
def computing_on(backend):
    """Context manager of every public computation: the backend's device current
    (:meth:`xpnet.Backend.activate`) and NumPy's BLAS at one thread
    (:func:`single_blas_thread`)."""
    with backend.activate(), single_blas_thread(backend.xp):
        yield


def synchronize(xp, device=None) -> None:
    """Wait for queued device work to finish (no-op on host backends)."""
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        # the stream of *that* device: another GPU may be current
        with device if isinstance(device, cupy.cuda.Device) else contextlib.nullcontext():
            cupy.cuda.get_current_stream().synchronize()
    elif array_api_compat.is_torch_namespace(xp):
        import torch

        if torch.cuda.is_available() and (device is None or getattr(device, "type", "") == "cuda"):
            torch.cuda.synchronize()
