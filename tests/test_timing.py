import numpy as np

import xpnet
from xpnet.device import track_peak_memory
from xpnet.timing import time_call


def test_time_call_statistics(backend):
    calls = []
    stats = time_call(
        lambda: calls.append(1), xp=backend.xp, device=backend.device, warmup=2, repeats=4
    )
    assert len(calls) == 6 and len(stats["times_s"]) == 4
    assert stats["min_s"] <= stats["median_s"] <= stats["max_s"]


def test_time_call_measures_memory_of_first_call():
    stats = time_call(lambda: np.ones(1_000_000), repeats=1, memory=True)
    assert stats["peak_bytes"] >= 8_000_000 and stats["peak_how"] == "tracemalloc"
    assert stats["result"].shape == (1_000_000,)


def test_peak_memory_on_strict_device1():
    b = xpnet.resolve_backend("array_api_strict", device="device1")
    result, peak, how = track_peak_memory(
        b.xp, b.device, lambda: b.xp.ones(500_000, device=b.device)
    )
    assert peak >= 4_000_000 and result.device == b.device
