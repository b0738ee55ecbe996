import importlib.util

import array_api_strict
import numpy as np
import pytest

import xpnet
from xpnet.backend import is_numpy, resolve_backend, to_numpy
from xpnet.device import out_of_memory_errors, synchronize


def test_default_is_numpy_float64_cpu():
    b = resolve_backend()
    assert b.name == "numpy" and b.device == "cpu" and b.dtype == b.xp.float64
    assert is_numpy(b.xp)
    assert "numpy" in repr(b) and "float64" in repr(b)


def test_resolves_each_backend(backend):
    x = backend.from_host(np.arange(3.0))
    assert x.dtype == backend.xp.float64
    np.testing.assert_array_equal(to_numpy(x), [0.0, 1.0, 2.0])


@pytest.mark.parametrize("name", ["tensorflow", "np", ""])
def test_unknown_backend_lists_valid_ones(name):
    with pytest.raises(ValueError, match="array_api_strict.*cupy.*numpy|expected one of"):
        resolve_backend(name)


def test_backend_type_error():
    with pytest.raises(TypeError, match="backend must be"):
        resolve_backend(3.14)


def test_backend_given_as_module():
    assert resolve_backend(np).name == "numpy"
    assert resolve_backend(array_api_strict).name == "array_api_strict"


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="cupy is installed")
def test_missing_cupy_gives_install_hint():
    with pytest.raises(ImportError, match=r'pip install "xpnet\[cupy\]"'):
        resolve_backend("cupy")


@pytest.mark.parametrize("dtype", ["float16", "int64", "complex128"])
def test_unknown_dtype(dtype):
    with pytest.raises(ValueError, match="dtype"):
        resolve_backend("numpy", dtype=dtype)


def test_dtype_given_as_object():
    assert resolve_backend("numpy", dtype=np.float32).dtype_name == "float32"


def test_bad_devices():
    with pytest.raises(ValueError, match="device"):
        resolve_backend("numpy", device="cuda")
    with pytest.raises(ValueError, match="device"):
        resolve_backend("array_api_strict", device=array_api_strict.Device("nowhere"))


def test_asarray_moves_between_devices_and_libraries():
    strict1 = resolve_backend("array_api_strict", device="device1")
    default = array_api_strict.asarray([1.0, 2.0])  # on CPU_DEVICE
    moved = strict1.asarray(default)
    assert moved.device == strict1.device
    from_numpy = strict1.asarray(np.asarray([1.0, 2.0]))
    assert from_numpy.device == strict1.device
    numpy_b = resolve_backend("numpy")
    np.testing.assert_array_equal(numpy_b.asarray(moved), [1.0, 2.0])


def test_to_numpy_from_strict_device1():
    a = array_api_strict.asarray([1.5], device=array_api_strict.Device("device1"))
    out = xpnet.to_numpy(a)
    assert isinstance(out, np.ndarray) and out[0] == 1.5


def test_out_of_memory_errors_name_each_library_type(backend, xp):
    expected = {MemoryError}
    if backend.name == "torch":
        import torch

        expected.add(torch.OutOfMemoryError)
    if backend.name == "cupy":
        import cupy

        expected.add(cupy.cuda.memory.OutOfMemoryError)
    assert set(out_of_memory_errors(xp)) == expected


@pytest.mark.slow  # importing torch takes ~2 s
def test_torch_meta_device_is_refused_clearly():
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="device='meta'.*not 'meta'"):
        xpnet.resolve_backend("torch", device="meta")


class _FakeDevice:
    """Stands for cupy.cuda.Device on the CPU: a reusable context manager that
    records whether it is current."""

    def __init__(self):
        self.depth, self.entered = 0, 0

    def __enter__(self):
        self.depth += 1
        self.entered += 1
        return self

    def __exit__(self, *exc):
        self.depth -= 1


class _CheckingNamespace:
    """A namespace proxy that fails any call made outside the fake device."""

    def __init__(self, xp, device):
        self._xp, self._device = xp, device

    def __getattr__(self, name):
        real = getattr(self._xp, name)
        if not callable(real) or isinstance(real, type):
            return real

        def call(*args, **kwargs):
            assert self._device.depth > 0, f"xp.{name} called outside the device context"
            return real(*args, **kwargs)

        return call


def test_every_network_computation_runs_in_the_device_context():
    """The mechanism that keeps CuPy work on the network's GPU, checked on the CPU:
    a backend whose device must be entered, and a namespace that refuses any call
    made outside it."""
    import array_api_compat.numpy as np_xp

    fake = _FakeDevice()
    checked = _CheckingNamespace(np_xp, fake)
    backend = xpnet.Backend("numpy", checked, "cpu", np_xp.float64, fake)
    net = xpnet.TwoLayerNet(6, 4, 3, backend=backend, seed=0)
    x, t = np.random.default_rng(0).random((5, 6)), np.array([0, 1, 2, 1, 0])
    assert fake.depth == 0
    net.predict(x), net.loss(x, t), net.accuracy(x, t), net.gradient(x, t)
    net.numerical_gradient(x, t)
    xpnet.gradient_check(net, x, t, verbose=False, directions=2)
    assert fake.depth == 0 and fake.entered >= 6
    with pytest.raises(AssertionError, match="outside the device context"):
        checked.zeros(3)  # the proxy does catch a call made outside


def test_synchronize_and_activate_on_host_backends_are_no_ops(backend):
    with backend.activate():
        x = backend.from_host(np.ones(3))
    synchronize(backend.xp, backend.device)
    assert x.device == backend.device


def test_a_training_run_steps_in_the_device_context(monkeypatch):
    import sys

    import array_api_compat.numpy as np_xp

    from xpnet.datasets import load_digits
    from xpnet.train import TrainConfig, train

    fake = _FakeDevice()
    backend = xpnet.Backend("numpy", _CheckingNamespace(np_xp, fake), "cpu", np_xp.float64, fake)
    for module in ("xpnet.network", "xpnet.train"):
        monkeypatch.setattr(sys.modules[module], "resolve_backend", lambda *a, **k: backend)
    config = TrainConfig(hidden=8, batch_size=50, iters=30, seed=0)
    h = train(config, data=load_digits(), log=None, progress=False).history
    assert h["iters_done"] == 30 and fake.depth == 0 and fake.entered >= 1


# ---- the CuPy branches, on a CuPy-like stand-in (no GPU needed) ------------------
def test_cupy_devices_resolve_from_every_spelling(fake_cupy):
    from xpnet.backend import _resolve_device

    Device = fake_cupy.module.cuda.Device
    assert _resolve_device("cupy", fake_cupy.xp, None) == Device(0)
    for spelling in (1, "1", "cuda:1", "gpu:1", Device(1)):
        assert _resolve_device("cupy", fake_cupy.xp, spelling) == Device(1)


def test_a_cupy_array_comes_to_the_host_with_get(fake_cupy):
    from xpnet.backend import to_numpy

    host = np.arange(6.0).reshape(2, 3)
    copy = to_numpy(fake_cupy.module.ndarray(host))
    assert isinstance(copy, np.ndarray) and np.array_equal(copy, host)


def test_a_cupy_backend_sends_workers_to_their_own_gpu(fake_cupy):
    from xpnet.backend import Backend
    from xpnet.distributed import WorkerSpec
    from xpnet.model import ModelSpec

    device = fake_cupy.module.cuda.Device(1)
    backend = Backend("cupy", fake_cupy.xp, device, fake_cupy.xp.float64, context=device)
    assert backend.on_gpu and backend.worker_device() is None
    assert WorkerSpec.of(ModelSpec((4, 3, 2)), backend).device is None
    with backend.activate():
        assert fake_cupy.module.cuda.Device() == device  # current inside the context
