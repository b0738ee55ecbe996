"""Host threads, the allocator setting and what a device reports, on the host."""

import os
import subprocess
import sys

import pytest

import xpnet.device as device
from xpnet.device import host_threads, out_of_memory_errors, tune_host_allocator


def test_host_threads_default_to_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv("XPNET_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert host_threads() == cores
    assert host_threads(3) == 3


def test_host_threads_are_capped_by_the_environment(monkeypatch):
    monkeypatch.setenv("XPNET_NUM_THREADS", "1")
    assert host_threads() == 1
    assert host_threads(4) == 4  # an explicit request wins
    monkeypatch.setenv("XPNET_NUM_THREADS", "two")
    with pytest.raises(ValueError, match=r"\$XPNET_NUM_THREADS must be a positive integer"):
        host_threads()


@pytest.mark.parametrize("bad, error", [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_thread_counts_name_n_threads(bad, error):
    with pytest.raises(error, match="n_threads must be a positive int"):
        host_threads(bad)


def test_out_of_memory_errors_of_numpy():
    import numpy as np

    assert MemoryError in out_of_memory_errors(np)


def test_free_memory_is_unknown_on_the_host():
    import array_api_compat.numpy as xp

    assert device.free_memory(xp, "cpu") is None


def _allocator_in_a_fresh_process(env):
    code = "import xpnet.device as d; print(d.tune_host_allocator(), d.tune_host_allocator())"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux")
def test_the_allocator_is_tuned_once_unless_the_user_says_otherwise():
    clean = {"XPNET_TUNE_MALLOC": "1", "MALLOC_MMAP_THRESHOLD_": "", "MALLOC_TRIM_THRESHOLD_": ""}
    tuned = _allocator_in_a_fresh_process(clean)
    assert tuned[0] == tuned[1]  # remembered, not redone
    assert _allocator_in_a_fresh_process({**clean, "XPNET_TUNE_MALLOC": "0"}) == ["False"] * 2
    user = {**clean, "MALLOC_TRIM_THRESHOLD_": "65536"}
    assert _allocator_in_a_fresh_process(user) == ["False"] * 2


def test_tune_host_allocator_returns_a_bool():
    assert tune_host_allocator() in (True, False)


# ---- the CuPy branches, on a CuPy-like stand-in (no GPU needed) ------------------
def test_cupy_free_memory_counts_the_pool(fake_cupy):
    free = device.free_memory(fake_cupy.xp, fake_cupy.module.cuda.Device(1))
    assert free == 3 * 2**30 + 2**20


def test_cupy_out_of_memory_is_a_chunk_that_did_not_fit(fake_cupy):
    errors = out_of_memory_errors(fake_cupy.xp)
    assert fake_cupy.module.cuda.memory.OutOfMemoryError in errors and MemoryError in errors


def test_cupy_device_names_and_peak_memory_hook(fake_cupy):
    assert device.device_name(fake_cupy.xp, fake_cupy.module.cuda.Device(2)) == "Fake GPU 2"
    result, peak, how = device.track_peak_memory(fake_cupy.xp, None, lambda: 7)
    assert (result, peak, how) == (7, 0, "cupy memory hook")


def _numpy_blas_threads():
    """NumPy's own BLAS thread counts (SciPy may have loaded another BLAS)."""
    from threadpoolctl import threadpool_info

    info = threadpool_info()
    return {i["num_threads"] for i in info if i["user_api"] == "blas" and "numpy" in i["filepath"]}


@pytest.fixture
def shared_blas_pool():
    """NumPy's BLAS with one thread pool for the whole process (OpenBLAS's own
    threads, as in NumPy's wheels): what the limit across threads is about."""
    from threadpoolctl import threadpool_info

    layers = {
        i.get("threading_layer")
        for i in threadpool_info()
        if i["user_api"] == "blas" and "numpy" in i["filepath"]
    }
    if layers != {"pthreads"}:
        pytest.skip(f"NumPy's BLAS threading here: {layers or 'not visible to threadpoolctl'}")


def test_one_blas_thread_holds_until_the_last_thread_inside_leaves(shared_blas_pool):
    """Two threads inside at once, the first leaving first: the second still
    computes at one BLAS thread; the count comes back when both have left."""
    import threading

    import array_api_compat.numpy as xp
    from threadpoolctl import threadpool_limits

    first_inside, first_left = threading.Event(), threading.Event()
    seen = {}

    def second():
        first_inside.wait(10)
        with device.single_blas_thread(xp):
            first_left.wait(10)
            seen["second, after the first left"] = _numpy_blas_threads()

    with threadpool_limits(limits=2, user_api="blas"):
        worker = threading.Thread(target=second)
        worker.start()
        with device.single_blas_thread(xp):
            seen["first"] = _numpy_blas_threads()
            first_inside.set()
            for _ in range(10_000):  # until the second thread is inside too
                if device._BLAS.depth == 2:
                    break
                worker.join(0.001)
        first_left.set()
        worker.join()
        seen["after both"] = _numpy_blas_threads()
    assert seen == {
        "first": {1},
        "second, after the first left": {1},
        "after both": {2},
    }


def test_one_blas_thread_in_a_thread_after_the_main_thread_used_it(shared_blas_pool):
    """threadpoolctl ignores every thread but its controlling one: a worker
    thread alone inside, after the main thread was, still gets one BLAS thread."""
    import threading

    import array_api_compat.numpy as xp
    from threadpoolctl import threadpool_limits

    seen = {}

    def worker():
        with device.single_blas_thread(xp):
            seen["worker"] = _numpy_blas_threads()
        seen["worker, after"] = _numpy_blas_threads()

    with threadpool_limits(limits=2, user_api="blas"):
        with device.single_blas_thread(xp):
            seen["main"] = _numpy_blas_threads()
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        seen["main, after"] = _numpy_blas_threads()
    assert seen == {"main": {1}, "worker": {1}, "worker, after": {2}, "main, after": {2}}
