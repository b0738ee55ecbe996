"""The book's networks: ``MultiLayerNet`` of any depth, and ``TwoLayerNet``.

Rules of this module:

* A network is a thin, validating shell around the model core
  (:mod:`xpnet.model`): it holds the backend, the spec (``net.spec``) and the
  book's ``params`` dict, checks what a user hands it, and calls the core. It
  computes nothing itself.
* The backend is resolved once, in ``__init__``, and held as ``self.backend``
  (``self.xp``, ``self.device``, ``self.dtype``). Inputs of any library are moved
  to it; results stay on its device.
* ``self.params`` (``W1 b1 ... WL bL``) is the source of truth: every public
  method reads and checks it afresh (:meth:`MultiLayerNet.checked_layers`), so a
  user's ``net.params["W1"] = ...`` (or in-place update) is honoured.
* :meth:`MultiLayerNet.batch` is the boundary for data: it returns a
  :class:`xpnet.model.Batch` that the core, the trainer and the gradient checks
  use unchecked.
* Initial weights are drawn on the host from ``numpy.random.default_rng(seed)``,
  ``W1`` first, so the same seed gives the same weights on every backend.
"""

from __future__ import annotations

import functools
import math

import numpy as np  # host

from . import checks, model
from .backend import resolve_backend, to_numpy
from .checks import check_float_array, check_inputs, check_size
from .device import computing_on
from .dtypes import same_dtype
from .functions import ACTIVATIONS
from .gradient import check_step_range, resolve_step
from .heads import HEADS
from .io import save_npz
from .netfile import network_arrays, read_network_file
from .numerical import METHODS, model_gradient

__all__ = ["MultiLayerNet", "METHODS", "INITS", "check_init"]

#: Named weight scales (the book's): He for ReLU, Xavier for sigmoid.
INITS = {"relu": 2.0, "he": 2.0, "sigmoid": 1.0, "xavier": 1.0}


def check_init(weight_init_std, name: str = "weight_init_std"):
    """A standard deviation ``>= 0`` (float) or one of :data:`INITS` (lower-cased)."""
    if isinstance(weight_init_std, str):
        if weight_init_std.lower() not in INITS:
            raise ValueError(
                f"{name}={weight_init_std!r} is not known; expected a float >= 0 "
                f"or one of {sorted(INITS)}"
            )
        return weight_init_std.lower()
    try:
        return checks.non_negative_float(name, weight_init_std)
    except TypeError:
        raise ValueError(
            f"{name} must be a finite float >= 0 or one of {sorted(INITS)}, got {weight_init_std!r}"
        ) from None


def _on_device(method):
    """Run a public method inside the backend's device context (CuPy: the
    network's GPU is current, whatever device the caller has current), with
    NumPy's BLAS at one thread (:func:`xpnet.device.single_blas_thread`)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with computing_on(self.backend):
            return method(self, *args, **kwargs)

    return wrapper


class MultiLayerNet:
    """Affine - activation - ... - affine - head, with the book's API, any depth.

    Parameters
    ----------
    input_size : int
    hidden_size_list : list of int
        Units of each hidden layer, e.g. ``[100, 100]``; ``[]`` is a linear model
        (one affine layer and the head: softmax regression for the softmax head).
    output_size : int
    activation : {"relu", "sigmoid"}
    weight_init_std : float or {"relu", "he", "sigmoid", "xavier"}
        Standard deviation of the initial weights; ``"relu"``/``"he"`` is
        ``sqrt(2 / n_in)`` per layer, ``"sigmoid"``/``"xavier"`` ``sqrt(1 / n_in)``
        (biases start at 0).
    weight_decay_lambda : float
        ``lambda >= 0`` of the decay term ``0.5 * lambda * sum_l ||W_l||^2``.
    output : {"softmax", "sigmoid", "identity"}
        The head: softmax + cross-entropy (labels or one-hot targets), independent
        sigmoids + binary cross-entropy (0/1 targets), identity + squared error
        (regression, float targets).
    backend : str or module
        ``"numpy"``, ``"cupy"``, ``"torch"``, ``"array_api_strict"``, ``"jax"``.
    device : object, optional
        Backend device (see :func:`xpnet.resolve_backend`).
    dtype : {"float64", "float32"}
    seed : int, optional
        Seed of the host RNG that draws the initial weights.

    Attributes
    ----------
    params : dict
        ``W1 (D, H1)``, ``b1 (H1,)``, ..., ``WL (H_{L-1}, C)``, ``bL (C,)``.
    spec : xpnet.model.ModelSpec
        Sizes ``(D, H1, ..., C)``, activation, head and decay.
    """

    def __init__(
        self,
        input_size,
        hidden_size_list,
        output_size,
        activation="relu",
        weight_init_std="relu",
        weight_decay_lambda=0.0,
        *,
        output="softmax",
        backend="numpy",
        device=None,
        dtype="float64",
        seed=None,
    ):
        sizes = (
            check_size("input_size", input_size),
            *checks.sizes("hidden_size_list", hidden_size_list, allow_empty=True),
            check_size("output_size", output_size),
        )
        checks.one_of("activation", activation, ACTIVATIONS)
        checks.one_of("output", output, HEADS)
        init = check_init(weight_init_std)
        if seed is not None:
            checks.non_negative_int("seed", seed)
        self.spec = model.ModelSpec(
            sizes,
            activation,
            output,
            checks.non_negative_float("weight_decay_lambda", weight_decay_lambda),
        )
        self.weight_init_std = init
        # the weights, drawn on the host in float64 and copied to the device
        n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        checks.fits_in_memory("the layer sizes", 16 * n_params)
        self.backend = resolve_backend(backend, device, dtype)
        rng = np.random.default_rng(seed)  # host
        self.params = {}
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), 1):
            std = math.sqrt(INITS[init] / n_in) if isinstance(init, str) else init
            weights = std * rng.standard_normal((n_in, n_out))  # host
            self.params[f"W{layer}"] = self.backend.from_host(weights, dtype=self.dtype)
            self.params[f"b{layer}"] = self.backend.from_host(
                np.zeros(n_out),  # host
                dtype=self.dtype,
            )

    # -- what the network is -------------------------------------------------
    @property
    def xp(self):
        return self.backend.xp

    @property
    def device(self):
        return self.backend.device

    @property
    def dtype(self):
        return self.backend.dtype

    @property
    def sizes(self) -> tuple:
        return self.spec.sizes

    @property
    def activation(self) -> str:
        return self.spec.activation

    @property
    def output(self) -> str:
        return self.spec.output

    @property
    def head(self):
        return self.spec.head

    @property
    def weight_decay_lambda(self) -> float:
        return self.spec.weight_decay

    @weight_decay_lambda.setter
    def weight_decay_lambda(self, value) -> None:
        decay = checks.non_negative_float("weight_decay_lambda", value)
        self.spec = model.ModelSpec(self.sizes, self.activation, self.output, decay)

    @property
    def input_size(self) -> int:
        return self.sizes[0]

    @property
    def hidden_size_list(self) -> list[int]:
        return list(self.sizes[1:-1])

    @property
    def output_size(self) -> int:
        return self.sizes[-1]

    @property
    def n_layers(self) -> int:
        """Affine layers (hidden layers + 1)."""
        return self.spec.n_layers

    def param_shapes(self) -> dict:
        return self.spec.param_shapes()

    def __repr__(self) -> str:
        return (
            f"MultiLayerNet(input_size={self.input_size}, "
            f"hidden_size_list={self.hidden_size_list}, output_size={self.output_size}, "
            f"activation={self.activation!r}, weight_init_std={self.weight_init_std!r}, "
            f"weight_decay_lambda={self.weight_decay_lambda!r}, output={self.output!r}, "
            f"backend={self.backend.name!r}, device={self.device!r}, "
            f"dtype={self.backend.dtype_name!r})"
        )

    # -- the boundary: checks of what users hand over ----------------------------
    def checked_layers(self) -> list:
        """``[(W1, b1), ...]`` of the current ``params``, on this backend, with
        shapes and values checked (one transfer for all of them)."""
        xp = self.xp
        layers, finite, shapes = [], [], self.param_shapes()
        for name_w, name_b in _names(self.n_layers):
            pair = []
            for name in (name_w, name_b):
                shape = shapes[name]
                if name not in self.params:
                    raise KeyError(f"params is missing {name!r}")
                value = self.backend.asarray(self.params[name], name=f"params[{name!r}]")
                check_float_array(f"params[{name!r}]", value)
                if not same_dtype(xp, value.dtype, self.dtype):
                    value = self.xp.astype(value, self.dtype)
                if tuple(value.shape) != shape:
                    raise ValueError(
                        f"params[{name!r}] must have shape {shape}, got {tuple(value.shape)}"
                    )
                # finite values have a finite sum, but for overflow: a sum that is not
                # finite is looked at closely below
                finite.append(xp.sum(value))
                pair.append(value)
            layers.append(tuple(pair))
        sums = to_numpy(xp.stack(finite))  # host: one transfer for every parameter
        if not np.isfinite(sums).all():  # host
            names = [n for pair in _names(self.n_layers) for n in pair]
            flat = [array for pair in layers for array in pair]
            for name, array in zip(names, flat, strict=True):
                if not bool(xp.all(xp.isfinite(array))):
                    raise ValueError(f"params[{name!r}] contains NaN or inf")
        return layers

    def inputs(self, x):
        """``x`` checked and moved to this backend: ``(N, D)`` floats, finite."""
        x = self.backend.asarray(x, name="x")
        check_float_array("x", x)  # before the cast: integer pixels are refused, not converted
        if not same_dtype(self.xp, x.dtype, self.dtype):
            x = self.xp.astype(x, self.dtype)
        # after the cast: finite in the network's dtype (1e300 is inf in float32)
        return check_inputs(x, self.input_size)

    def batch(self, x, t) -> model.Batch:
        """``(x, t)`` checked once, on this backend, as the head takes them."""
        x = self.inputs(x)
        targets = self.head.targets(
            self.backend.asarray(t, name="t"), x.shape[0], self.output_size, self.dtype
        )
        return model.Batch(x, targets)

    # -- the book's API ------------------------------------------------------
    @_on_device
    def predict(self, x):
        """Outputs of the head, shape (N, C), on the network's device: class
        probabilities (softmax), per-output probabilities (sigmoid) or values
        (identity)."""
        a = model.forward(self.spec, self.checked_layers(), self.inputs(x))[0]
        return self.head.output(a[-1])

    @_on_device
    def loss(self, x, t):
        """Mean loss of the head plus weight decay: a 0-d array (``float()`` works)."""
        return model.loss(self.spec, self.checked_layers(), self.batch(x, t))

    @_on_device
    def accuracy(self, x, t) -> float:
        """Fraction of correct predictions (Python float).

        softmax: arg-max class equals the label; sigmoid: outputs with
        ``(y > 0.5) == t``. The identity head has no accuracy (ValueError).
        """
        if not self.head.has_accuracy:
            self.head.hits(None, None)  # raises the head's message
        hits, total = model.hits(self.spec, self.checked_layers(), self.batch(x, t))
        return int(hits) / total

    @_on_device
    def gradient(self, x, t) -> dict:
        """Backpropagation gradient of :meth:`loss` (dict ``W1 b1 ... WL bL``).

        As in the book, backprop differentiates the loss without the ``+1e-7``
        inside its logs, which changes the gradient by about 1e-6 (relative)
        compared with the numerical gradient.
        """
        return model.params_of(model.backprop(self.spec, self.checked_layers(), self.batch(x, t)))

    @_on_device
    def numerical_gradient(
        self,
        x,
        t,
        *,
        h=None,
        method="auto",
        chunk_size=None,
        max_bytes=None,
        n_threads=None,
        client=None,
        shards=None,
        param_blocks=None,
    ) -> dict:
        """Central-difference gradient of :meth:`loss` (dict ``W1 b1 ... WL bL``).

        Parameters
        ----------
        x : array (N, D) ; t : targets fitting the head
        h : float, optional
            Step. Default: 1e-4 in float64 (the book's), about 2e-2 in float32,
            1e-20 for ``method="complex"``.
        method : {"auto", "structured", "complex", "batched", "loop"}
            ``loop``: the book's one-weight-at-a-time reference. ``batched``:
            chunks of perturbed parameter copies through a batched forward pass.
            ``structured``: only what a perturbation changes is recomputed
            (fastest; see :mod:`xpnet.structured`). ``complex``: the complex step
            ``Im f(p + ih e_k) / h``, structured, exact to rounding. ``auto`` is
            ``structured``.
        chunk_size, max_bytes : int, optional
            Chunking of ``batched`` (``max_bytes`` also bounds ``structured``).
        n_threads : int, optional
            Cores of ``structured``/``complex`` on NumPy (default: the cores
            this process may use, capped by ``$XPNET_NUM_THREADS``), in helper
            processes (:mod:`xpnet.procs`) or threads (``$XPNET_PARALLEL``).
        client : distributed.Client, optional
            Compute on a Dask cluster (:mod:`xpnet.distributed`): the batch is
            split into sample shards (and parameter blocks), each a task on a
            worker's own device; the result equals one process's to rounding.
        shards, param_blocks : int, optional
            With ``client``: sample shards and parameter blocks (default: two
            tasks per worker thread, from sample shards first).
        """
        method, h = self._method_and_step(method, h)
        sizes = {"n_threads": n_threads, "max_bytes": max_bytes, "chunk_size": chunk_size}
        sizes = {k: None if v is None else checks.positive_int(k, v) for k, v in sizes.items()}
        batch, layers = self.batch(x, t), self.checked_layers()
        if client is not None:
            from .distributed import sharded_gradient

            blocks = sharded_gradient(
                self.spec, layers, batch, client, backend=self.backend, h=h, method=method,
                max_bytes=sizes["max_bytes"], shards=shards, param_blocks=param_blocks,
            )  # fmt: skip
        else:
            if shards is not None or param_blocks is not None:
                raise ValueError("shards and param_blocks split work for a client: give client=")
            blocks = model_gradient(self.spec, layers, batch, h=h, method=method, **sizes)
        return model.params_of([(block[:-1, :], block[-1, :]) for block in blocks])

    def _method_and_step(self, method, h) -> tuple[str, float]:
        """The checked method (``auto`` resolved) and its step for this dtype."""
        method = checks.one_of("method", method, METHODS)
        if method == "auto":
            method = "structured"
        complex_step = method == "complex"
        h = resolve_step(h, self.dtype, self.xp, complex_step=complex_step)
        check_step_range(h, self.backend.dtype_name, complex_step=complex_step)
        return method, h

    # -- persistence ---------------------------------------------------------
    def save(self, path):
        """Save sizes, activation, head, decay and parameters as ``.npz`` (atomic,
        no pickle)."""
        host = {k: to_numpy(v) for k, v in model.params_of(self.checked_layers()).items()}
        arrays = network_arrays(self.spec, host)
        return save_npz(path, arrays)

    def set_host_params(self, arrays: dict) -> None:
        """Replace ``params`` by host arrays (checked now, not at first use)."""
        self.params = {k: self.backend.from_host(v, dtype=self.dtype) for k, v in arrays.items()}
        self.checked_layers()

    @classmethod
    def load(cls, path, *, backend="numpy", device=None, dtype="float64", max_bytes=None):
        """Load a network written by :meth:`save` (of either class) onto any backend.

        The file is checked from its headers before any weight is read;
        ``max_bytes`` bounds what its weights may take (default
        :data:`xpnet.io.MAX_NPZ_BYTES`)."""
        arrays, spec = read_network_file(path, max_bytes)
        net = MultiLayerNet.from_spec(spec, backend=backend, device=device, dtype=dtype)
        net.set_host_params(arrays)
        return net

    @staticmethod
    def from_spec(spec: model.ModelSpec, **where) -> MultiLayerNet:
        """A network of ``spec`` with zero weights, to be given its parameters
        (what :meth:`load` builds); ``where``: ``backend``, ``device``, ``dtype``.
        Its ``weight_init_std`` is None: its weights were not drawn."""
        net = MultiLayerNet(
            spec.sizes[0],
            list(spec.sizes[1:-1]),
            spec.sizes[-1],
            spec.activation,
            0.0,
            spec.weight_decay,
            output=spec.output,
            **where,
        )
        net.weight_init_std = None
        return net

    @staticmethod
    def shaped(sizes, activation, output, weight_decay_lambda=0.0, **where) -> MultiLayerNet:
        """:meth:`from_spec` of ``ModelSpec(sizes, activation, output, decay)``."""
        spec = model.ModelSpec(tuple(sizes), activation, output, float(weight_decay_lambda))
        return MultiLayerNet.from_spec(spec, **where)


def _names(n_layers: int):
    return [(f"W{k}", f"b{k}") for k in range(1, n_layers + 1)]
