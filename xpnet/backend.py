"""Backends: the one module that knows array libraries by name.

Rules of this module:

* A backend is named once, by the user, as a string (``"numpy"``, ``"cupy"``,
  ``"torch"``, ``"array_api_strict"``, ``"jax"``) or as a namespace module. It is
  resolved here into a :class:`Backend`: an Array-API namespace ``xp`` (the
  ``array_api_compat`` wrapper where the library needs one), a device and a
  floating dtype. Everything else in xpnet receives ``xp`` explicitly or infers it
  from its arrays with ``array_api_compat.array_namespace``.
* Libraries are imported lazily, so a missing optional backend costs nothing until
  it is asked for, and then fails with the pip command that installs it.
* NumPy is used here only on the host: to receive host data (``from_host``) and to
  bring device arrays back (``to_numpy``). Nothing here changes global state.
* What a device does once resolved (its context, memory, out-of-memory errors,
  synchronisation, threads) lives in :mod:`xpnet.device`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np  # host

from .dtypes import DTYPES as _DTYPE_RECORDS
from .dtypes import dtype_info, same_dtype

__all__ = [
    "BACKENDS",
    "Backend",
    "resolve_backend",
    "to_numpy",
    "library_version",
    "is_numpy",
    "one_worker_per_gpu",
]

# name -> (module to import, pip command that provides it)
BACKENDS: dict[str, tuple[str, str]] = {
    "numpy": ("array_api_compat.numpy", 'pip install "xpnet"'),
    "cupy": (
        "array_api_compat.cupy",
        'pip install "xpnet[cupy]"  (CUDA 13; for CUDA 12: pip install cupy-cuda12x)',
    ),
    "torch": ("array_api_compat.torch", 'pip install "xpnet[torch]"'),
    "array_api_strict": ("array_api_strict", "pip install array-api-strict"),
    "jax": ("jax.numpy", 'pip install "xpnet[jax]"'),
}

# module names a user may pass as a namespace, mapped to our backend names
_MODULE_NAMES = {
    "numpy": "numpy",
    "array_api_compat.numpy": "numpy",
    "cupy": "cupy",
    "array_api_compat.cupy": "cupy",
    "torch": "torch",
    "array_api_compat.torch": "torch",
    "array_api_strict": "array_api_strict",
    "jax.numpy": "jax",
    "jax": "jax",
}

#: Names of the supported floating dtypes (their numbers: :mod:`xpnet.dtypes`)
DTYPES = tuple(_DTYPE_RECORDS)


@dataclass(frozen=True, eq=False)
class Backend:
    """A resolved backend: namespace, device and floating dtype.

    Attributes
    ----------
    name : str
        One of :data:`BACKENDS`.
    xp : module
        Array-API namespace (compat-wrapped where needed).
    device : object
        Device on which every array of this backend is created.
    dtype : object
        Real floating dtype of ``xp`` (``xp.float64`` or ``xp.float32``).
    """

    name: str
    xp: ModuleType
    device: Any
    dtype: Any
    #: A reusable context manager that makes ``device`` current (CuPy's
    #: ``cupy.cuda.Device``), or None where ``device=`` is honoured everywhere.
    context: Any = None

    @property
    def dtype_name(self) -> str:
        return dtype_info(self.xp, self.dtype).name

    def activate(self):
        """Context manager under which every computation of this backend runs.

        array-api-compat ignores ``device=`` in CuPy's creation functions
        (array-api-compat issue #337: ``xp.eye(3, device=1)`` lands on GPU 0), and
        CuPy allocates results on the *current* device: so xpnet enters the
        device's context around its work (this method is the one place). A no-op
        for the other backends.
        """
        return contextlib.nullcontext() if self.context is None else self.context

    def from_host(self, array, dtype=None):
        """Copy a host (NumPy or Python) array onto this backend's device."""
        with self.activate():
            return self.xp.asarray(array, dtype=dtype, device=self.device)

    def asarray(self, array, dtype=None, name="array"):
        """Bring ``array`` (NumPy, Python or any backend's array) to this backend.

        Arrays already in this namespace are moved with ``to_device`` (no host
        round trip); arrays of other libraries go through the host. An
        ``np.matrix`` becomes a plain array; a masked array and a torch tensor
        on the "meta" device (no values) are refused, naming ``name``.
        """
        array = _plain(array, name)
        try:
            namespace = array_api_compat.array_namespace(array)
        except TypeError:
            namespace = None
        if namespace is not None and _same_library(namespace, self.xp):
            device = array_api_compat.device(array)
            if device is not self.device and device != self.device:
                array = array_api_compat.to_device(array, self.device)
            if dtype is not None and not same_dtype(self.xp, array.dtype, dtype):
                array = self.xp.astype(array, dtype)
            return array
        return self.from_host(to_numpy(array), dtype=dtype)

    @property
    def on_gpu(self) -> bool:
        """Whether this backend computes on a GPU (CuPy, or torch on CUDA)."""
        return self.name == "cupy" or "cuda" in str(self.device)

    def worker_device(self):
        """The device a Dask worker should compute this backend's work on: its own
        GPU for CuPy (None: the worker's current device) and torch CUDA
        (``"cuda"``), the host otherwise; array-api-strict keeps its named device."""
        if self.name == "cupy":
            return None
        if self.name == "torch":
            return "cuda" if "cuda" in str(self.device) else "cpu"
        if self.name in ("numpy", "jax"):
            return None
        return self.device

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, device={self.device!r}, dtype={self.dtype_name!r})"


def _same_library(a: ModuleType, b: ModuleType) -> bool:
    return a is b or getattr(a, "__name__", None) == getattr(b, "__name__", None)


def _backend_name(backend) -> str:
    if isinstance(backend, str):
        name = backend.lower().replace("-", "_")
        if name not in BACKENDS:
            raise ValueError(
                f"backend={backend!r} is not known; expected one of {sorted(BACKENDS)} "
                "or an Array-API namespace module"
            )
        return name
    if isinstance(backend, ModuleType):
        known = _MODULE_NAMES.get(backend.__name__)
        if known is None:
            raise ValueError(
                f"backend module {backend.__name__!r} is not supported; expected one of "
                f"{sorted(BACKENDS)}"
            )
        return known
    raise TypeError(f"backend must be a string or a namespace module, got {type(backend).__name__}")


def _import(name: str) -> ModuleType:
    module, hint = BACKENDS[name]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"backend={name!r} needs a library that is not installed ({exc}); "
            f"install it with: {hint}"
        ) from exc


def _resolve_device(name: str, xp: ModuleType, device):
    if name == "numpy":
        if device not in (None, "cpu"):
            raise ValueError(f"device={device!r}: the numpy backend has only device='cpu'")
        return "cpu"
    if name == "torch":
        import torch

        try:
            resolved = torch.device("cpu" if device is None else device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device={device!r} is not a torch device: {exc}") from exc
        if resolved.type not in ("cpu", "cuda"):
            raise ValueError(
                f"device={device!r}: xpnet computes on 'cpu' or 'cuda' torch devices, "
                f"not {resolved.type!r} (meta tensors hold no values)"
            )
        if resolved.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device={device!r}: torch sees no CUDA device here")
            if resolved.index is None:  # tensors report "cuda:0": compare equal to them
                resolved = torch.device("cuda", torch.cuda.current_device())
        return resolved
    if name == "cupy":
        import cupy

        if device is None:
            return cupy.cuda.Device()
        if isinstance(device, str):
            device = int(device.removeprefix("cuda:").removeprefix("gpu:") or 0)
        return device if isinstance(device, cupy.cuda.Device) else cupy.cuda.Device(device)
    if name == "array_api_strict":
        info = xp.__array_namespace_info__()
        if device is None:
            return info.default_device()
        if isinstance(device, str):
            device = xp.Device(device)
        if device not in info.devices():
            raise ValueError(f"device={device!r} is not one of {info.devices()}")
        return device
    if name == "jax":
        import jax

        if device is None:
            return jax.devices()[0]
        if isinstance(device, str):
            return jax.devices(device)[0]
        return device
    raise AssertionError(name)


def resolve_backend(backend="numpy", device=None, dtype="float64") -> Backend:
    """Resolve a backend name or module, a device and a dtype into a :class:`Backend`.

    Parameters
    ----------
    backend : str or module
        ``"numpy"`` (default), ``"cupy"``, ``"torch"``, ``"array_api_strict"``,
        ``"jax"``, or one of those namespace modules.
    device : object, optional
        Backend device: ``"cpu"``; ``"cuda"``/``"cuda:1"`` for torch; a GPU
        number or ``cupy.cuda.Device`` for CuPy; a device name such as
        ``"device1"`` for array-api-strict. Default: the backend's default device.
    dtype : {"float64", "float32"}
        Floating dtype of parameters and computations.

    Raises
    ------
    ValueError
        Unknown backend, device or dtype.
    ImportError
        The backend's library is not installed (the message has the pip command).
    """
    if isinstance(backend, Backend):
        return backend
    name = _backend_name(backend)
    xp = _import(name)
    if not isinstance(dtype, str):
        names = (getattr(dtype, "name", None), getattr(dtype, "__name__", None), str(dtype))
        dtype = next(n for n in names if isinstance(n, str)).rsplit(".", 1)[-1].strip("'>")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; expected one of {DTYPES}")
    if name == "jax" and dtype == "float64":
        probe = xp.asarray(0.0, dtype=xp.float64)
        if probe.dtype != xp.float64:
            raise ValueError(
                "dtype='float64' on JAX needs 64-bit mode: set "
                "jax.config.update('jax_enable_x64', True) before creating the network, "
                "or use dtype='float32'"
            )
    resolved = _resolve_device(name, xp, device)
    context = resolved if name == "cupy" else None  # cupy.cuda.Device is one
    return Backend(name, xp, resolved, getattr(xp, dtype), context)


def is_numpy(xp) -> bool:
    """True when ``xp`` is NumPy (host arrays, where Python threads help)."""
    return array_api_compat.is_numpy_namespace(xp)


@functools.cache
def host_namespace() -> ModuleType:
    """NumPy's Array API namespace (array_api_compat's), as its arrays report it."""
    return array_api_compat.array_namespace(np.empty(0))  # host


def to_numpy(array) -> np.ndarray:
    """Bring any backend's array (or a Python scalar/list) to a host NumPy array."""
    if isinstance(array, np.ndarray):
        return array
    if array_api_compat.is_cupy_array(array):
        return array.get()
    if array_api_compat.is_torch_array(array):
        return array.detach().cpu().numpy()
    if type(array).__module__.startswith("array_api_strict"):
        return np.asarray(array.to_device(_strict_cpu()))
    return np.asarray(array)


@functools.lru_cache(maxsize=1)
def _strict_cpu():
    import array_api_strict

    return array_api_strict.__array_namespace_info__().default_device()


def _plain(array, name: str):
    """``array`` as values the library can compute with, or one clear error."""
    if isinstance(array, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array: fill or drop its masked values first "
            "(np.ma.filled(a, value) or a[~a.mask])"
        )
    if isinstance(array, np.matrix):
        return np.asarray(array)  # host: a plain 2-D array, no matrix semantics
    if array_api_compat.is_torch_array(array) and array.device.type == "meta":
        raise ValueError(f"{name} is a torch tensor on the 'meta' device: it holds no values")
    return array


def library_version(name: str) -> str | None:
    """Installed version of a backend's library, or None; read from the installed
    distribution's metadata unless the library is imported already (importing
    torch only to name its version would take seconds)."""
    module = {
        "numpy": "numpy",
        "cupy": "cupy",
        "torch": "torch",
        "jax": "jax",
        "array_api_strict": "array_api_strict",
    }.get(name, name)
    loaded = sys.modules.get(module)
    if loaded is not None:
        return getattr(loaded, "__version__", None)
    for distribution in _distributions().get(module, ()):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@functools.lru_cache(maxsize=1)
def _distributions() -> Mapping[str, list[str]]:
    """Top-level module name -> the distributions that install it (cupy ships as
    cupy-cuda12x and others)."""
    return importlib.metadata.packages_distributions()


def one_worker_per_gpu(backend_name: str) -> bool:
    """Whether a Dask cluster for ``backend_name`` wants one worker per GPU
    (dask-cuda's way): CuPy's."""
    return backend_name == "cupy"
