"""Shared fixtures: one parametrized backend fixture, and an independent float64
NumPy reference of the book's network that tests compare against."""

from __future__ import annotations

import hashlib
import importlib.util
import sys

import numpy as np
import pytest

import xpnet

# (id, backend, device): every test that takes `backend` or `xp` runs on each
BACKEND_PARAMS = [
    ("numpy", "numpy", None),
    ("strict", "array_api_strict", None),
    # a non-default device: any silent host/device mixing raises
    ("strict-device1", "array_api_strict", "device1"),
    ("torch", "torch", None),
    ("cupy", "cupy", None),
    ("jax", "jax", None),
]


def _skip_reason(name: str) -> str | None:
    if name == "torch" and importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'xpnet[torch]')"
    if name == "jax" and importlib.util.find_spec("jax") is None:
        return "jax is not installed (pip install 'xpnet[jax]')"
    if name == "cupy":
        if importlib.util.find_spec("cupy") is None:
            return "cupy is not installed (needs an NVIDIA GPU: pip install 'xpnet[cupy]')"
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() == 0:
                return "no CUDA device"
        except Exception as exc:  # noqa: BLE001 - any CUDA failure means no GPU here
            return f"no usable CUDA device ({exc})"
    return None


# The default tier runs NumPy, array-api-strict on its non-default device (the
# strictest stand-in for a GPU) and CuPy where there is a GPU; the slow tier adds
# array-api-strict's default device, torch and JAX (CI runs both tiers).
SLOW_BACKENDS = {"strict", "torch", "jax"}


def _marks(backend_id, name):
    marks = [pytest.mark.skipif(bool(_skip_reason(name)), reason=str(_skip_reason(name)))]
    if backend_id in SLOW_BACKENDS:
        marks.append(pytest.mark.slow)
    return marks


@pytest.fixture(
    params=[pytest.param((b, d), id=i, marks=_marks(i, b)) for i, b, d in BACKEND_PARAMS]
)
def backend(request) -> xpnet.Backend:
    """A resolved float64 backend (namespace, device, dtype)."""
    name, device = request.param
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 tests; JAX's only switch for it
    return xpnet.resolve_backend(name, device=device)


@pytest.fixture
def xp(backend):
    """The Array-API namespace of `backend`."""
    return backend.xp


def make_net(backend, sizes=(7, 5, 3), *, activation="sigmoid", std=0.5, seed=0, dtype="float64"):
    d, h, c = sizes
    return xpnet.TwoLayerNet(
        d,
        h,
        c,
        std,
        activation=activation,
        backend=backend.name,
        device=backend.device,
        dtype=dtype,
        seed=seed,
    )


def make_batch(n, d, c, *, seed=0, sparsity=0.5):
    """Host inputs in [0, 1) with about `sparsity` exact zeros, and labels."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, d))
    x[rng.random((n, d)) < sparsity] = 0.0
    return x, rng.integers(0, c, n)


# ---- independent float64 reference (plain NumPy, the book's formulas) ---------
def ref_forward(params, x, activation="sigmoid"):
    a1 = x @ params["W1"] + params["b1"]
    z1 = 1.0 / (1.0 + np.exp(-a1)) if activation == "sigmoid" else np.maximum(a1, 0.0)
    a2 = z1 @ params["W2"] + params["b2"]
    e = np.exp(a2 - a2.max(axis=1, keepdims=True))
    return a1, z1, e / e.sum(axis=1, keepdims=True)


def ref_loss(params, x, labels, activation="sigmoid"):
    y = ref_forward(params, x, activation)[2]
    return -np.sum(np.log(y[np.arange(len(labels)), labels] + 1e-7)) / len(labels)


def ref_gradient(params, x, labels, activation="sigmoid", *, log_eps=0.0):
    """Analytic gradient of the book's loss. log_eps=0: what backprop computes;
    log_eps=1e-7: the exact gradient of the loss *with* the book's +1e-7, from
    dL/da2 = -(1/N) * y_t / (y_t + eps) * (onehot - y)."""
    a1, z1, y = ref_forward(params, x, activation)
    n = len(labels)
    onehot = np.eye(y.shape[1])[labels]
    y_t = y[np.arange(n), labels][:, None]
    da2 = -(y_t / (y_t + log_eps)) * (onehot - y) / n
    dz1 = da2 @ params["W2"].T
    da1 = dz1 * (z1 * (1 - z1) if activation == "sigmoid" else (a1 > 0))
    return {"W1": x.T @ da1, "b1": da1.sum(0), "W2": z1.T @ da2, "b2": da2.sum(0)}


def host_params(net):
    return {k: xpnet.to_numpy(v) for k, v in net.params.items()}


_LOOP_CACHE: dict = {}


def host_loop_gradient(net, x, t):
    """The book's one-weight loop on a NumPy copy of ``net`` (same weights, head,
    activation and decay): the independent reference the fast methods of every
    backend are compared with, computed once per case (the loop on the other
    backends is tested against the book's own loop in test_gradient.py)."""
    params = host_params(net)
    x, t = np.asarray(x), np.asarray(t)
    key = hashlib.sha256()
    for part in (repr((net.sizes, net.activation, net.output, net.weight_decay_lambda)),):
        key.update(part.encode())
    for array in (*params.values(), x, t):
        key.update(repr((array.shape, str(array.dtype))).encode())
        key.update(np.ascontiguousarray(array).tobytes())
    digest = key.hexdigest()
    if digest not in _LOOP_CACHE:
        clone = xpnet.MultiLayerNet.shaped(
            net.sizes,
            net.activation,
            net.output,
            net.weight_decay_lambda,
            dtype=str(params["W1"].dtype),
        )
        clone.params = {k: v.copy() for k, v in params.items()}
        _LOOP_CACHE[digest] = clone.numerical_gradient(x, t, method="loop")
    return _LOOP_CACHE[digest]


def rel_error(a, b):
    """Normwise relative difference ||a - b|| / max(||a||, ||b||)."""
    a, b = xpnet.to_numpy(a), xpnet.to_numpy(b)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


# ---- networks of any depth and head ------------------------------------------
def make_multi(
    backend,
    sizes=(6, 5, 4, 3),
    *,
    activation="relu",
    output="softmax",
    decay=0.0,
    std=0.5,
    seed=0,
    dtype="float64",
):
    """A MultiLayerNet with random (not zero) biases: an all-zero input row would
    otherwise put ReLUs exactly on their kink, where central differences (slope
    1/2) and the complex step (slope 0) rightly disagree."""
    net = xpnet.MultiLayerNet(
        sizes[0],
        list(sizes[1:-1]),
        sizes[-1],
        activation,
        std,
        decay,
        output=output,
        backend=backend.name,
        device=backend.device,
        dtype=dtype,
        seed=seed,
    )
    rng = np.random.default_rng(seed + 7)
    for k in range(1, len(sizes)):
        net.params[f"b{k}"] = net.backend.from_host(
            0.3 * rng.standard_normal(sizes[k]), dtype=net.dtype
        )
    return net


def make_targets(output, n, c, *, seed=0):
    """Host targets fitting a head: labels, 0/1 matrix, or float regression values."""
    rng = np.random.default_rng(seed + 100)
    if output == "softmax":
        return rng.integers(0, c, n)
    if output == "sigmoid":
        return (rng.random((n, c)) < 0.5).astype(np.float64)
    return rng.standard_normal((n, c))


def _ref_act(a, activation):
    return 1.0 / (1.0 + np.exp(-a)) if activation == "sigmoid" else np.maximum(a, 0.0)


def ref_multi_forward(params, x, activation):
    """Pre-activations and activations of every layer (plain NumPy)."""
    n_layers = len(params) // 2
    z, a = [x], []
    for k in range(1, n_layers + 1):
        a.append(z[-1] @ params[f"W{k}"] + params[f"b{k}"])
        if k < n_layers:
            z.append(_ref_act(a[-1], activation))
    return a, z


def _ref_head(a_last, t, output):
    if output == "softmax":
        e = np.exp(a_last - a_last.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if output == "sigmoid":
        return 1.0 / (1.0 + np.exp(-a_last))
    return a_last


def ref_multi_loss(params, x, t, activation, output, decay=0.0):
    a, _ = ref_multi_forward(params, x, activation)
    y = _ref_head(a[-1], t, output)
    n = x.shape[0]
    if output == "softmax":
        data = -np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n
    elif output == "sigmoid":
        data = -np.sum(t * np.log(y + 1e-7) + (1 - t) * np.log(1 - y + 1e-7)) / n
    else:
        data = 0.5 * np.sum((y - t) ** 2) / n
    weights = sum(np.sum(params[k] ** 2) for k in params if k.startswith("W"))
    return data + 0.5 * decay * weights


def ref_multi_gradient(params, x, t, activation, output, decay=0.0, *, log_eps=0.0):
    """Analytic gradient of the loss: log_eps=0 is what backprop computes,
    log_eps=1e-7 the exact gradient of the loss with the book's +1e-7 terms."""
    a, z = ref_multi_forward(params, x, activation)
    y = _ref_head(a[-1], t, output)
    n = x.shape[0]
    if output == "softmax":
        onehot = np.eye(y.shape[1])[t]
        y_t = y[np.arange(n), t][:, None]
        da = -(y_t / (y_t + log_eps)) * (onehot - y) / n
    elif output == "sigmoid":
        dy = -t / (y + log_eps) + (1 - t) / (1 - y + log_eps)
        da = dy * y * (1 - y) / n
    else:
        da = (y - t) / n
    n_layers = len(a)
    grads = {}
    for k in range(n_layers, 0, -1):
        grads[f"W{k}"] = z[k - 1].T @ da + decay * params[f"W{k}"]
        grads[f"b{k}"] = da.sum(0)
        if k > 1:
            dz = da @ params[f"W{k}"].T
            prime = z[k - 1] * (1 - z[k - 1]) if activation == "sigmoid" else (a[k - 2] > 0)
            da = dz * prime
    return grads


# ---- device -> host transfers ------------------------------------------------
@pytest.fixture
def transfers(monkeypatch):
    """Counts every device -> host transfer of array-api-strict arrays: conversions
    to Python scalars, and copies to the CPU device from another device."""
    import array_api_strict

    array = array_api_strict._array_object.Array
    cpu = array_api_strict.__array_namespace_info__().default_device()
    counter = {"n": 0}

    def counted(name):
        real = getattr(array, name)

        def method(self, *args, **kwargs):
            if name != "to_device" or (args and args[0] == cpu and self.device != cpu):
                counter["n"] += 1
            return real(self, *args, **kwargs)

        monkeypatch.setattr(array, name, method)

    for name in ("__bool__", "__int__", "__float__", "__index__", "__complex__", "to_device"):
        counted(name)
    return counter


def assert_on_backend(a, backend, *, shape=None, dtype=None):
    """``a`` is an array of ``backend``'s library (not NumPy or another one), on its
    device, with its dtype (default: the backend's) and, if given, ``shape``."""
    import array_api_compat

    namespace = array_api_compat.array_namespace(a)
    assert xpnet.backend._same_library(namespace, backend.xp), (namespace, backend.xp)
    assert array_api_compat.device(a) == backend.device, (array_api_compat.device(a), backend)
    assert a.dtype == (backend.dtype if dtype is None else dtype), a.dtype
    if shape is not None:
        assert tuple(a.shape) == tuple(shape), a.shape


@pytest.fixture(scope="session")
def inproc_client():
    """A Dask cluster of two one-thread workers inside this process (no worker
    processes; its HTTP endpoint on 127.0.0.1), shared by the tests that need one."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


_METADATA = {
    "shape", "dtype", "ndim", "device", "size", "isdtype", "mT", "T",
    "__array_namespace__", "__len__", "__hash__", "__repr__", "__str__",
}  # fmt: skip
# conversions and moves of whole arrays: transfers, which count_ops.py counts
# apart from the operations
_TRANSFERS = {
    "__array__", "__dlpack__", "__bool__", "__int__", "__float__", "__index__",
    "__complex__", "tolist", "to_device",
}  # fmt: skip
_NOT_OPS = _METADATA | _TRANSFERS


def count_array_ops(fn) -> int:
    """Array operations that xpnet code issues into array-api-strict during one
    call of ``fn`` (each one a kernel launch on a GPU; indexing is counted, reads
    of metadata and transfers are not): the method of
    ``../shared/tools/count_ops.py``."""
    import sys

    count = [0]

    def profile(frame, event, arg):
        if event != "call" or frame.f_code.co_name in _NOT_OPS:
            return
        if not frame.f_globals.get("__name__", "").startswith("array_api_strict"):
            return
        caller = frame.f_back
        if caller is not None and caller.f_globals.get("__name__", "").startswith("xpnet"):
            count[0] += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count[0]


@pytest.fixture
def gpu_budget(monkeypatch):
    """Make xpnet see 80 GiB of free device memory: chunks sized as on a GPU."""
    import xpnet.gradient
    import xpnet.numerical

    for module in (xpnet.gradient, xpnet.numerical):
        monkeypatch.setattr(module, "free_memory", lambda *args: 80 * 2**30)


def pytest_terminal_summary(terminalreporter):
    """Skips in one line per reason (pytest's ``-rs`` gives one per test location:
    dozens of lines of "cupy is not installed")."""
    reasons = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        terminalreporter.section("skipped, by reason", sep="-")
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
            terminalreporter.write_line(f"{count:5d}  {reason}")


def xp_assert_close(actual, desired, *, rtol, atol=0.0, backend=None, err_msg=""):
    """``actual`` is ``desired`` to ``rtol`` normwise (``||a - d|| <= rtol *
    max(||a||, ||d||) + atol``), and lives where it should: with ``backend``,
    an array of that backend's library, on its device, in its dtype, of
    ``desired``'s shape (``desired`` may be a host reference)."""
    if backend is not None:
        assert_on_backend(actual, backend, shape=tuple(np.shape(xpnet.to_numpy(desired))))
    a, d = xpnet.to_numpy(actual), xpnet.to_numpy(desired)
    assert a.shape == d.shape, (a.shape, d.shape, err_msg)
    scale = max(np.linalg.norm(a), np.linalg.norm(d))
    assert np.linalg.norm(a - d) <= rtol * scale + atol, (rel_error(a, d), rtol, err_msg)


class _FakeCudaDevice:
    """Stands in for ``cupy.cuda.Device``: an id, a context that makes it
    current, equality by id."""

    current = [0]

    def __init__(self, device_id=None):
        self.id = _FakeCudaDevice.current[-1] if device_id is None else int(device_id)

    def __enter__(self):
        _FakeCudaDevice.current.append(self.id)
        return self

    def __exit__(self, *exc):
        _FakeCudaDevice.current.pop()

    def __eq__(self, other):
        return isinstance(other, _FakeCudaDevice) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


@pytest.fixture
def fake_cupy(monkeypatch):
    """A CuPy-like module named ``cupy`` (devices, memory queries, an ``ndarray``
    with ``.get()``, the OOM error, memory hooks), so that the code paths only a
    GPU takes run on a CPU. It computes nothing: it answers what xpnet asks."""
    import types

    cupy = types.ModuleType("cupy")

    class ndarray:  # noqa: N801 - CuPy's name, which array-api-compat looks for
        def __init__(self, host):
            self.host = np.asarray(host)

        def get(self):
            return self.host.copy()

    ndarray.__module__ = "cupy"

    class OutOfMemoryError(MemoryError):
        pass

    class MemoryHook:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    class Pool:
        def free_bytes(self):
            return 2**20

    cuda = types.SimpleNamespace(
        Device=_FakeCudaDevice,
        MemoryHook=MemoryHook,
        memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
        runtime=types.SimpleNamespace(
            memGetInfo=lambda: (3 * 2**30, 8 * 2**30),
            getDeviceProperties=lambda i: {"name": f"Fake GPU {i}".encode()},
        ),
    )
    cupy.ndarray, cupy.cuda = ndarray, cuda
    cupy.get_default_memory_pool = Pool
    for name in ("float64", "float32", "complex128", "complex64"):
        setattr(cupy, name, np.dtype(name))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    # the module is also the namespace: array-api-compat recognises CuPy by name
    return types.SimpleNamespace(module=cupy, xp=cupy)
