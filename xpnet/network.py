"""The book's networks: ``MultiLayerNet`` of any depth, and ``TwoLayerNet``.

Rules of this module:

* A network is affine - activation - ... - affine - head (:mod:`xpnet.heads`);
  ``TwoLayerNet`` is ``MultiLayerNet`` with one hidden layer and the softmax head,
  keeping the book's chapter 4 constructor.
* The backend is resolved once, in ``__init__``, and held as ``self.backend``
  (``self.xp``, ``self.device``, ``self.dtype``). Inputs of any library are moved
  to it; results stay on its device.
* ``self.params`` (``W1 b1 ... WL bL``) is the source of truth: every public
  method reads and validates it afresh, so a user's ``net.params["W1"] = ...`` (or
  in-place update) is honoured. The numerical gradient reads it once per call.
* Initial weights are drawn on the host from ``numpy.random.default_rng(seed)``,
  ``W1`` first, so the same seed gives the same weights on every backend.
* The loss is the head's mean over samples plus ``0.5 * lambda * sum_l ||W_l||^2``.
  That decay term is a quadratic: its central difference is exactly
  ``lambda * W`` per coordinate, so the structured and complex gradients add it
  without re-running the network.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np  # host

from .backend import resolve_backend, to_numpy
from .checks import check_float_array, check_inputs, check_size
from .device import free_memory, single_blas_thread
from .dtypes import DTYPES
from .functions import ACTIVATIONS
from .gradient import (
    itemsize,
    memory_budget,
    numerical_gradient,
    numerical_gradient_batched,
    resolve_step,
)
from .heads import HEADS, get_head
from .io import load_npz, npz_shapes, save_npz
from .structured import HOST_TOTAL_BYTES, host_bytes, structured_gradient

__all__ = ["MultiLayerNet", "TwoLayerNet", "METHODS", "PARAM_NAMES", "INITS"]

PARAM_NAMES = ("W1", "b1", "W2", "b2")
#: Numerical-gradient methods: ``auto`` picks ``structured``.
METHODS = ("auto", "structured", "complex", "batched", "loop")
#: Named weight scales (the book's): He for ReLU, Xavier for sigmoid.
INITS = {"relu": 2.0, "he": 2.0, "sigmoid": 1.0, "xavier": 1.0}


def _check_hidden(hidden_size_list) -> list[int]:
    if isinstance(hidden_size_list, (str, bytes)) or not isinstance(
        hidden_size_list, (list, tuple)
    ):
        hint = (
            f" (one layer of {hidden_size_list}: [{hidden_size_list}])"
            if isinstance(hidden_size_list, numbers.Integral)
            else ""
        )
        raise TypeError(
            "hidden_size_list must be a list of positive ints, got "
            f"{type(hidden_size_list).__name__} {hidden_size_list!r}{hint}"
        )
    if len(hidden_size_list) == 0:
        raise ValueError("hidden_size_list must name at least one hidden layer, got []")
    return [check_size(f"hidden_size_list[{i}]", h) for i, h in enumerate(hidden_size_list)]


def _check_init(weight_init_std):
    if isinstance(weight_init_std, str):
        if weight_init_std.lower() not in INITS:
            raise ValueError(
                f"weight_init_std={weight_init_std!r} is not known; expected a float >= 0 "
                f"or one of {sorted(INITS)}"
            )
        return weight_init_std.lower()
    if (
        isinstance(weight_init_std, bool)
        or not isinstance(weight_init_std, numbers.Real)
        or not (math.isfinite(weight_init_std) and weight_init_std >= 0)
    ):
        raise ValueError(
            f"weight_init_std must be a finite float >= 0 or one of {sorted(INITS)}, "
            f"got {weight_init_std!r}"
        )
    return float(weight_init_std)


def _check_decay(value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and value >= 0)
    ):
        raise ValueError(f"weight_decay_lambda must be a finite float >= 0, got {value!r}")
    return float(value)


def _check_central_step(h: float, dtype_name: str) -> None:
    """``h`` within the dtype's :attr:`~xpnet.dtypes.DType.step_range`."""
    low, high = DTYPES[dtype_name].step_range
    if not low <= h <= high:
        raise ValueError(
            f"h={h:g} cannot give a {dtype_name} central difference: use {low:g} <= h <= "
            f"{high:g} (default h=None), or method='complex' for tiny steps"
        )


def _on_device(method):
    """Run a public method inside the backend's device context (CuPy: the
    network's GPU is current, whatever device the caller has current)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.backend.activate():
            return method(self, *args, **kwargs)

    return wrapper


class MultiLayerNet:
    """Affine - activation - ... - affine - head, with the book's API, any depth.

    Parameters
    ----------
    input_size : int
    hidden_size_list : list of int
        Units of each hidden layer, e.g. ``[100, 100]`` (at least one).
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
    sizes : tuple of int
        ``(D, H1, ..., C)``.
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
            *_check_hidden(hidden_size_list),
            check_size("output_size", output_size),
        )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation={activation!r} is not known; expected one of {sorted(ACTIVATIONS)}"
            )
        init = _check_init(weight_init_std)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
        ):
            raise ValueError(f"seed must be None or an int >= 0, got {seed!r}")
        self.weight_decay_lambda = _check_decay(weight_decay_lambda)
        self.head = get_head(output)
        self.sizes = sizes
        self.activation = activation
        self.weight_init_std = init
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

    # -- backend shortcuts -------------------------------------------------
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
    def input_size(self) -> int:
        return self.sizes[0]

    @property
    def hidden_size_list(self) -> list[int]:
        return list(self.sizes[1:-1])

    @property
    def output_size(self) -> int:
        return self.sizes[-1]

    @property
    def output(self) -> str:
        return self.head.name

    @property
    def n_layers(self) -> int:
        """Affine layers (hidden layers + 1)."""
        return len(self.sizes) - 1

    def param_shapes(self) -> dict:
        shapes = {}
        for layer, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True), 1):
            shapes[f"W{layer}"] = (n_in, n_out)
            shapes[f"b{layer}"] = (n_out,)
        return shapes

    def __repr__(self) -> str:
        return (
            f"MultiLayerNet(input_size={self.input_size}, "
            f"hidden_size_list={self.hidden_size_list}, output_size={self.output_size}, "
            f"activation={self.activation!r}, weight_init_std={self.weight_init_std!r}, "
            f"weight_decay_lambda={self.weight_decay_lambda!r}, output={self.output!r}, "
            f"backend={self.backend.name!r}, device={self.device!r}, "
            f"dtype={self.backend.dtype_name!r})"
        )

    # -- inputs --------------------------------------------------------------
    def _params(self) -> dict:
        """Current parameters, on this backend, with shapes and values checked."""
        out = {}
        for name, shape in self.param_shapes().items():
            if name not in self.params:
                raise KeyError(f"params is missing {name!r}")
            value = self.params[name]
            check_float_array(f"params[{name!r}]", self.backend.asarray(value))
            value = self.backend.asarray(value, dtype=self.dtype)
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"params[{name!r}] must have shape {shape}, got {tuple(value.shape)}"
                )
            if not bool(self.xp.all(self.xp.isfinite(value))):
                raise ValueError(f"params[{name!r}] contains NaN or inf")
            out[name] = value
        return out

    def _layers(self, p) -> list:
        return [(p[f"W{k}"], p[f"b{k}"]) for k in range(1, self.n_layers + 1)]

    def _inputs(self, x):
        x = self.backend.asarray(x)
        check_float_array("x", x)  # before the cast: integer pixels are refused, not converted
        # after the cast: finite in the network's dtype (1e300 is inf in float32)
        return check_inputs(self.xp.astype(x, self.dtype), self.input_size)

    def _batch(self, x, t):
        x = self._inputs(x)
        targets = self.head.targets(
            self.backend.asarray(t), x.shape[0], self.output_size, self.dtype
        )
        return x, targets

    # -- forward and loss (unchecked internals) --------------------------------
    def _forward(self, x, layers):
        """Pre-activations ``a`` and activations ``z`` of every layer (z[0] = x)."""
        act = ACTIVATIONS[self.activation].function
        z, a = [x], []
        for index, (W, b) in enumerate(layers):
            a.append(z[-1] @ W + b)
            if index < len(layers) - 1:
                z.append(act(a[-1]))
        return a, z

    def _decay(self, p):
        """``0.5 * lambda * sum ||W||^2`` as a 0-d array (0 when lambda is 0)."""
        xp = self.xp
        total = xp.zeros((), dtype=self.dtype, device=self.device)
        if self.weight_decay_lambda:
            for k in range(1, self.n_layers + 1):
                total = total + xp.sum(p[f"W{k}"] * p[f"W{k}"])
            total = 0.5 * self.weight_decay_lambda * total
        return total

    def _loss(self, x, targets, p):
        terms = self.head.losses(self._forward(x, self._layers(p))[0][-1], targets)
        return self.xp.sum(terms) / x.shape[0] + self._decay(p)

    # -- the book's API ------------------------------------------------------
    @_on_device
    def predict(self, x):
        """Outputs of the head, shape (N, C), on the network's device: class
        probabilities (softmax), per-output probabilities (sigmoid) or values
        (identity)."""
        a = self._forward(self._inputs(x), self._layers(self._params()))[0]
        return self.head.output(a[-1])

    @_on_device
    def loss(self, x, t):
        """Mean loss of the head plus weight decay: a 0-d array (``float()`` works)."""
        x, targets = self._batch(x, t)
        return self._loss(x, targets, self._params())

    @_on_device
    def accuracy(self, x, t) -> float:
        """Fraction of correct predictions (Python float).

        softmax: arg-max class equals the label; sigmoid: outputs with
        ``(y > 0.5) == t``. The identity head has no accuracy (ValueError).
        """
        if not self.head.has_accuracy:
            self.head.hits(None, None)  # raises the head's message
        x, targets = self._batch(x, t)
        hits, total = self._hits(x, targets, self._params())
        return int(hits) / total

    def _hits(self, x, targets, p):
        """Correct predictions (0-d array, on the device) and how many were judged."""
        y = self.head.output(self._forward(x, self._layers(p))[0][-1])
        return self.head.hits(y, targets)

    @_on_device
    def gradient(self, x, t) -> dict:
        """Backpropagation gradient of :meth:`loss` (dict ``W1 b1 ... WL bL``).

        As in the book, backprop differentiates the loss without the ``+1e-7``
        inside its logs, which changes the gradient by about 1e-6 (relative)
        compared with the numerical gradient.
        """
        x, targets = self._batch(x, t)
        return self._backprop(x, targets, self._params())

    def _backprop(self, x, targets, p) -> dict:
        """:meth:`gradient` on validated inputs and parameters (no checks)."""
        xp = self.xp
        layers = self._layers(p)
        a, z = self._forward(x, layers)
        derivative = ACTIVATIONS[self.activation].derivative
        da = self.head.delta(self.head.output(a[-1]), targets) / x.shape[0]
        grads = {}
        for k in range(self.n_layers, 0, -1):
            W = layers[k - 1][0]
            grads[f"W{k}"] = xp.permute_dims(z[k - 1], (1, 0)) @ da
            grads[f"b{k}"] = xp.sum(da, axis=0)
            if self.weight_decay_lambda:
                grads[f"W{k}"] = grads[f"W{k}"] + self.weight_decay_lambda * W
            if k > 1:
                dz = da @ xp.permute_dims(W, (1, 0))
                da = derivative(a[k - 2], z[k - 1]) * dz
        return {name: grads[name] for name in self.param_shapes()}

    def loss_batched(self, x, targets, name, stack, *, params=None):
        """Losses for a stack of values of one parameter, the others fixed.

        Parameters
        ----------
        x : array (N, D) and targets, already validated on this backend.
        name : str
            A key of ``params`` (``"W2"``, ``"b1"``, ...).
        stack : array, shape (K, *params[name].shape)
        params : dict, optional
            The other parameters, as returned by an earlier read of ``params``;
            callers that evaluate many stacks pass it so the parameters are read
            and validated once, not on every call. Default: read them now.

        Returns
        -------
        array, shape (K,)
        """
        xp = self.xp
        p = dict(self._params() if params is None else params)
        p[name] = stack
        layers = []
        for W, b in self._layers(p):
            layers.append((W, b if b.ndim == 1 else b[:, None, :]))
        a = self._forward(x, layers)[0][-1]  # (K, N, C): the stack broadcasts
        if a.ndim == 2:
            a = a[None, ...]
        losses = xp.sum(self.head.losses(a, targets), axis=-1) / x.shape[0]
        if self.weight_decay_lambda:
            fixed = sum(xp.sum(p[k] * p[k]) for k in p if k.startswith("W") and k != name)
            moving = xp.sum(xp.reshape(stack * stack, (stack.shape[0], -1)), axis=1)
            if not name.startswith("W"):
                moving = xp.zeros_like(moving)
            losses = losses + 0.5 * self.weight_decay_lambda * (moving + fixed)
        return losses

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
            Threads for ``structured``/``complex`` on NumPy (default 1).
        client : distributed.Client, optional
            Compute on a Dask cluster (:mod:`xpnet.distributed`): the batch is
            split into sample shards (and parameter blocks), each a task on a
            worker's own device; the result equals one process's to rounding.
        shards, param_blocks : int, optional
            With ``client``: sample shards and parameter blocks (default: two
            tasks per worker thread, from sample shards first).
        """
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not known; expected one of {METHODS}")
        if method == "auto":
            method = "structured"
        xp = self.xp
        h = resolve_step(h, self.dtype, xp, complex_step=method == "complex")
        if method != "complex":
            _check_central_step(h, self.backend.dtype_name)
        if n_threads is not None and (
            isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral)
        ):
            raise TypeError(f"n_threads must be a positive int, got {n_threads!r}")
        x, targets = self._batch(x, t)
        if client is not None:
            from .distributed import sharded_gradient

            return sharded_gradient(
                self,
                x,
                targets,
                client,
                h=h,
                method=method,
                max_bytes=max_bytes,
                shards=shards,
                param_blocks=param_blocks,
            )
        if shards is not None or param_blocks is not None:
            raise ValueError("shards and param_blocks split work for a client: give client=")
        return self._numerical_gradient(
            x,
            targets,
            self._params(),
            h=h,
            method=method,
            chunk_size=chunk_size,
            max_bytes=max_bytes,
            n_threads=n_threads,
        )

    def _numerical_gradient(
        self, x, targets, params, *, h, method, chunk_size=None, max_bytes=None, n_threads=None
    ) -> dict:
        """:meth:`numerical_gradient` on validated inputs, parameters, step and
        method (``"auto"`` already resolved; no checks). NumPy's BLAS runs one
        thread inside it (:func:`xpnet.device.single_blas_thread`)."""
        with single_blas_thread(self.xp):
            return self._numerical_gradient_unlimited(
                x,
                targets,
                params,
                h=h,
                method=method,
                chunk_size=chunk_size,
                max_bytes=max_bytes,
                n_threads=n_threads,
            )

    def _numerical_gradient_unlimited(
        self, x, targets, params, *, h, method, chunk_size, max_bytes, n_threads
    ) -> dict:
        xp = self.xp
        if method in ("structured", "complex"):
            blocks = self._structured_rows(
                x, targets, params, h=h, method=method, max_bytes=max_bytes, n_threads=n_threads
            )
            grads = {}
            for k, block in enumerate(blocks, 1):
                grads[f"W{k}"], grads[f"b{k}"] = block[:-1, :], block[-1, :]
            return grads
        grads = {}
        for name, value in params.items():
            if method == "loop":

                def f(w, name=name):
                    return self.loss_batched(x, targets, name, w[None, ...], params=params)[0]

                grads[name] = numerical_gradient(f, xp.asarray(value, copy=True), h=h)
            else:
                n = x.shape[0]
                work = n * sum(self.sizes[1:]) * 3 + sum(
                    a * b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True)
                )
                grads[name] = numerical_gradient_batched(
                    lambda stack, name=name: self.loss_batched(
                        x, targets, name, stack, params=params
                    ),
                    value,
                    h=h,
                    chunk_size=chunk_size,
                    max_bytes=max_bytes,
                    item_bytes=work * itemsize(xp, self.dtype),
                )
        return grads

    def _structured_rows(
        self, x, targets, params, *, h, method, max_bytes, n_threads=None, rows=None
    ) -> list:
        """The structured gradient (``method`` ``"structured"`` or ``"complex"``) with
        this network's budgets and its decay, per layer the stacked ``[dW; db]``
        ``(H_{l-1} + 1, H_l)``; with ``rows`` (per layer ``None`` or ``(r0, r1)``,
        what one task of a sharded gradient computes) only those rows, ``None``
        for layers without any."""
        xp = self.xp
        spans = rows if rows is not None else [(0, n + 1) for n in self.sizes[:-1]]
        blocks = structured_gradient(
            x,
            targets,
            self._layers(params),
            activation=self.activation,
            output=self.output,
            h=h,
            mode="central" if method == "structured" else "complex",
            max_bytes=memory_budget(xp, self.device, max_bytes, host_default=HOST_TOTAL_BYTES),
            chunk_bytes=host_bytes(self.n_layers, self.activation)
            if free_memory(xp, self.device) is None
            else None,
            n_threads=n_threads,
            rows=spans,
        )
        decay = self.weight_decay_lambda
        out = []
        for k, (block, span) in enumerate(zip(blocks, spans, strict=True), 1):
            n_decayed = min(span[1], self.sizes[k - 1]) - span[0] if block is not None else 0
            if decay and n_decayed > 0:
                # the decay's central difference (and complex step) is exact: lambda * W
                # on the rows of W (the last row of [W; b] is b's)
                W = params[f"W{k}"][span[0] : span[0] + n_decayed, :]
                block = xp.concat([block[:n_decayed, :] + decay * W, block[n_decayed:, :]], axis=0)
            out.append(block)
        return out

    # -- persistence ---------------------------------------------------------
    def _config_arrays(self) -> dict:
        return {
            "sizes": np.asarray(self.sizes),  # host
            "activation": np.asarray(self.activation),  # host
            "output": np.asarray(self.output),  # host
            "weight_decay_lambda": np.asarray(self.weight_decay_lambda),  # host
        }

    def save(self, path):
        """Save sizes, activation, head, decay and parameters as ``.npz`` (atomic,
        no pickle)."""
        arrays = {k: to_numpy(v) for k, v in self._params().items()}
        arrays.update(self._config_arrays())
        return save_npz(path, arrays)

    @staticmethod
    def _read(path) -> tuple[dict, tuple, dict]:
        """Stored arrays, sizes and configuration of a network file, checked
        against each other from the headers before any weight is read."""
        shapes = npz_shapes(path)
        missing = {"sizes", "activation"} - set(shapes)
        if missing:
            raise ValueError(f"{path} is not an xpnet network file (missing {sorted(missing)})")
        sizes_shape, sizes_dtype = shapes["sizes"]
        if len(sizes_shape) != 1 or not 3 <= sizes_shape[0] <= 1000 or sizes_dtype.kind not in "iu":
            raise ValueError(
                f"{path}: 'sizes' must be 3 or more integer layer sizes, got shape "
                f"{sizes_shape} of {sizes_dtype}"
            )
        config_keys = ("sizes", "activation", "output", "weight_decay_lambda")
        small = load_npz(path, keys=config_keys)
        sizes = tuple(int(v) for v in small["sizes"])
        if min(sizes) <= 0:
            raise ValueError(f"{path}: 'sizes' must be positive, got {sizes}")
        expected = {}
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), 1):
            expected[f"W{k}"], expected[f"b{k}"] = (n_in, n_out), (n_out,)
        for name, shape in expected.items():
            if name not in shapes:
                raise ValueError(f"{path} is not an xpnet network file (missing {name!r})")
            stored, dtype = shapes[name]
            if stored != shape or dtype.kind != "f":
                raise ValueError(
                    f"{path}: {name} is stored with shape {stored} ({dtype}) but 'sizes' "
                    f"{sizes} needs {shape} floats: not an xpnet file or damaged"
                )
        for key in ("activation", "output", "weight_decay_lambda"):
            if key in small and small[key].shape != ():
                raise ValueError(f"{path}: {key!r} must be a single value")
        config = {
            "activation": str(small["activation"]),
            "output": str(small["output"]) if "output" in small else "softmax",
            "weight_decay_lambda": float(small.get("weight_decay_lambda", 0.0)),
        }
        return load_npz(path, keys=set(expected)), sizes, config

    def _set_host_params(self, arrays: dict) -> None:
        self.params = {k: self.backend.from_host(v, dtype=self.dtype) for k, v in arrays.items()}
        self._params()  # validate shapes now, not at first use

    @classmethod
    def load(cls, path, *, backend="numpy", device=None, dtype="float64"):
        """Load a network written by :meth:`save` (of either class) onto any backend."""
        arrays, sizes, config = cls._read(path)
        if config["output"] not in HEADS:
            raise ValueError(f"{path}: unknown output {config['output']!r}")
        net = MultiLayerNet.shaped(
            sizes,
            config["activation"],
            config["output"],
            config["weight_decay_lambda"],
            backend=backend,
            device=device,
            dtype=dtype,
        )
        net._set_host_params(arrays)
        return net

    @staticmethod
    def shaped(sizes, activation, output, weight_decay_lambda=0.0, **where) -> MultiLayerNet:
        """A network of ``sizes`` ``(D, H1, ..., C)`` with zero weights, to be
        given its parameters (what :meth:`load` and Dask workers rebuild);
        ``where``: ``backend``, ``device``, ``dtype``."""
        return MultiLayerNet(
            sizes[0],
            list(sizes[1:-1]),
            sizes[-1],
            activation,
            0.0,
            weight_decay_lambda,
            output=output,
            **where,
        )


class TwoLayerNet(MultiLayerNet):
    """The book's chapter 4-5 network: affine - activation - affine - softmax.

    ``MultiLayerNet`` with one hidden layer, the softmax head and no decay, with
    the book's constructor.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        Layer sizes (``D``, ``H``, ``C``), e.g. 784, 50, 10.
    weight_init_std : float
        Standard deviation of the initial weights (biases start at 0).
    activation : {"sigmoid", "relu"}
        Hidden activation (the book's chapter 4 uses sigmoid).
    backend, device, dtype, seed
        As for :class:`MultiLayerNet`.

    Attributes
    ----------
    params : dict
        ``W1 (D, H)``, ``b1 (H,)``, ``W2 (H, C)``, ``b2 (C,)`` backend arrays.
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        output_size,
        weight_init_std=0.01,
        *,
        activation="sigmoid",
        backend="numpy",
        device=None,
        dtype="float64",
        seed=None,
    ):
        super().__init__(
            input_size,
            [check_size("hidden_size", hidden_size)],
            output_size,
            activation,
            weight_init_std,
            backend=backend,
            device=device,
            dtype=dtype,
            seed=seed,
        )

    @property
    def hidden_size(self) -> int:
        return self.sizes[1]

    def __repr__(self) -> str:
        return (
            f"TwoLayerNet(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"output_size={self.output_size}, activation={self.activation!r}, "
            f"backend={self.backend.name!r}, device={self.device!r}, "
            f"dtype={self.backend.dtype_name!r})"
        )

    @classmethod
    def load(cls, path, *, backend="numpy", device=None, dtype="float64"):
        """Load a two-layer softmax network written by :meth:`save`."""
        arrays, sizes, config = cls._read(path)
        if len(sizes) != 3 or config["output"] != "softmax" or config["weight_decay_lambda"]:
            raise ValueError(
                f"{path} holds a network of sizes {sizes} with output {config['output']!r}; "
                "TwoLayerNet needs one hidden layer and softmax: use MultiLayerNet.load"
            )
        net = cls(
            *sizes, activation=config["activation"], backend=backend, device=device, dtype=dtype
        )
        net._set_host_params(arrays)
        return net
