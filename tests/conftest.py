"""Shared fixtures: one parametrized backend fixture, and an independent float64
NumPy reference of the book's network that tests compare against."""

from __future__ import annotations

import importlib.util

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


@pytest.fixture(
    params=[
        pytest.param(
            (b, d),
            id=i,
            marks=pytest.mark.skipif(bool(_skip_reason(b)), reason=str(_skip_reason(b))),
        )
        for i, b, d in BACKEND_PARAMS
    ]
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


def rel_error(a, b):
    """Normwise relative difference ||a - b|| / max(||a||, ||b||)."""
    a, b = xpnet.to_numpy(a), xpnet.to_numpy(b)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)
