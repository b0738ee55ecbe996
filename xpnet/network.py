"""The book's two-layer network (chapters 4-5), on any Array-API backend.

Rules of this module:

* The backend is resolved once, in ``__init__``, and held as ``self.backend``
  (``self.xp``, ``self.device``, ``self.dtype``). Inputs of any library are moved
  to it; results stay on its device.
* ``self.params`` is the source of truth: every method reads it afresh, so a
  user's ``net.params["W1"] = ...`` (or in-place update) is honoured.
* Initial weights are drawn on the host from ``numpy.random.default_rng(seed)``,
  so the same seed gives the same weights on every backend.
"""

from __future__ import annotations

import numpy as np  # host

from . import functions as F
from .backend import resolve_backend, to_numpy
from .checks import check_float_array, check_inputs, check_size, check_targets
from .gradient import (
    itemsize,
    memory_budget,
    numerical_gradient,
    numerical_gradient_batched,
    resolve_step,
)
from .io import load_npz, save_npz
from .structured import ACTIVATIONS, HOST_BYTES, structured_gradient

__all__ = ["TwoLayerNet", "METHODS", "PARAM_NAMES"]

PARAM_NAMES = ("W1", "b1", "W2", "b2")
#: Numerical-gradient methods: ``auto`` picks ``structured``.
METHODS = ("auto", "structured", "complex", "batched", "loop")
_GRADIENTS = {"sigmoid": F.sigmoid_grad, "relu": F.relu_grad}


class TwoLayerNet:
    """Affine - activation - affine - softmax, with the book's API.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        Layer sizes (``D``, ``H``, ``C``), e.g. 784, 50, 10.
    weight_init_std : float
        Standard deviation of the initial weights (biases start at 0).
    activation : {"sigmoid", "relu"}
        Hidden activation (the book's chapter 4 uses sigmoid).
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
        ``W1 (D, H)``, ``b1 (H,)``, ``W2 (H, C)``, ``b2 (C,)`` backend arrays.
    xp : module
        The Array-API namespace of the backend.
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
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.output_size = check_size("output_size", output_size)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation={activation!r} is not known; expected one of {sorted(ACTIVATIONS)}"
            )
        if not isinstance(weight_init_std, (int, float)) or not weight_init_std >= 0:
            raise ValueError(f"weight_init_std must be a float >= 0, got {weight_init_std!r}")
        self.activation = activation
        self.backend = resolve_backend(backend, device, dtype)
        rng = np.random.default_rng(seed)  # host
        shapes = self.param_shapes()
        host = {
            "W1": weight_init_std * rng.standard_normal(shapes["W1"]),
            "b1": np.zeros(shapes["b1"]),  # host
            "W2": weight_init_std * rng.standard_normal(shapes["W2"]),
            "b2": np.zeros(shapes["b2"]),  # host
        }
        self.params = {k: self.backend.from_host(v, dtype=self.dtype) for k, v in host.items()}

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

    def param_shapes(self) -> dict:
        d, h, c = self.input_size, self.hidden_size, self.output_size
        return {"W1": (d, h), "b1": (h,), "W2": (h, c), "b2": (c,)}

    def __repr__(self) -> str:
        return (
            f"TwoLayerNet(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"output_size={self.output_size}, activation={self.activation!r}, "
            f"backend={self.backend.name!r}, device={self.device!r}, "
            f"dtype={self.backend.dtype_name!r})"
        )

    # -- inputs --------------------------------------------------------------
    def _params(self) -> dict:
        """Current parameters, on this backend, with their shapes checked."""
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
            out[name] = value
        return out

    def _inputs(self, x):
        x = self.backend.asarray(x)
        check_float_array("x", x)  # before the cast: integer pixels are refused, not converted
        # after the cast: finite in the network's dtype (1e300 is inf in float32)
        return check_inputs(self.xp.astype(x, self.dtype), self.input_size)

    def _batch(self, x, t):
        x = self._inputs(x)
        labels = check_targets(self.backend.asarray(t), x.shape[0], self.output_size)
        return x, labels

    # -- the book's API ------------------------------------------------------
    def _forward(self, x, p):
        a1 = x @ p["W1"] + p["b1"]
        z1 = ACTIVATIONS[self.activation](a1)
        a2 = z1 @ p["W2"] + p["b2"]
        return a1, z1, F.softmax(a2)

    def predict(self, x):
        """Class probabilities, shape (N, C), on the network's device."""
        return self._forward(self._inputs(x), self._params())[2]

    def loss(self, x, t):
        """The book's cross-entropy loss: a 0-d array (``float()`` works)."""
        x, labels = self._batch(x, t)
        return F.cross_entropy_error(self._forward(x, self._params())[2], labels)

    def accuracy(self, x, t) -> float:
        """Fraction of samples whose arg-max class equals the label (Python float)."""
        x, labels = self._batch(x, t)
        y = self._forward(x, self._params())[2]
        hits = self.xp.sum(self.xp.astype(self.xp.argmax(y, axis=1) == labels, self.xp.int64))
        return int(hits) / x.shape[0]

    def gradient(self, x, t) -> dict:
        """Backpropagation gradient of :meth:`loss` (dict ``W1 b1 W2 b2``).

        As in the book, backprop differentiates ``-log(y_t)``: it ignores the
        ``+1e-7`` inside the log, which changes the gradient by about 1e-6
        (relative) compared with the numerical gradient.
        """
        xp = self.xp
        x, labels = self._batch(x, t)
        p = self._params()
        a1, z1, y = self._forward(x, p)
        one_hot = xp.astype(
            labels[:, None] == xp.arange(self.output_size, device=self.device), self.dtype
        )
        dy = (y - one_hot) / x.shape[0]
        da1 = _GRADIENTS[self.activation](a1) * (dy @ xp.permute_dims(p["W2"], (1, 0)))
        return {
            "W1": xp.permute_dims(x, (1, 0)) @ da1,
            "b1": xp.sum(da1, axis=0),
            "W2": xp.permute_dims(z1, (1, 0)) @ dy,
            "b2": xp.sum(dy, axis=0),
        }

    def loss_batched(self, x, labels, name, stack, *, params=None):
        """Losses for a stack of values of one parameter, the others fixed.

        Parameters
        ----------
        x : array (N, D) and labels : array (N,), already on this backend.
        name : {"W1", "b1", "W2", "b2"}
        stack : array, shape (K, *params[name].shape)
        params : dict, optional
            The other parameters, as returned by an earlier read of ``params``;
            callers that evaluate many stacks pass it so the parameters are read
            and validated once, not on every call. Default: read them now.

        Returns
        -------
        array, shape (K,)
        """
        p = dict(self._params() if params is None else params)
        p[name] = stack
        b1 = p["b1"] if p["b1"].ndim == 1 else p["b1"][:, None, :]
        b2 = p["b2"] if p["b2"].ndim == 1 else p["b2"][:, None, :]
        z1 = ACTIVATIONS[self.activation](x @ p["W1"] + b1)
        y = F.softmax(z1 @ p["W2"] + b2)
        return F.cross_entropy_error(y, labels)

    def numerical_gradient(
        self, x, t, *, h=None, method="auto", chunk_size=None, max_bytes=None, n_threads=None
    ) -> dict:
        """Central-difference gradient of :meth:`loss` (dict ``W1 b1 W2 b2``).

        Parameters
        ----------
        x : array (N, D) ; t : labels (N,) or one-hot (N, C)
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
            Threads for ``structured``/``complex`` on NumPy (default: CPU count).
        """
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not known; expected one of {METHODS}")
        if method == "auto":
            method = "structured"
        xp = self.xp
        h = resolve_step(h, self.dtype, xp, complex_step=method == "complex")
        x, labels = self._batch(x, t)
        params = self._params()
        if method in ("structured", "complex"):
            return structured_gradient(
                x,
                labels,
                params,
                activation=self.activation,
                h=h,
                mode="central" if method == "structured" else "complex",
                max_bytes=memory_budget(xp, self.device, max_bytes, host_default=HOST_BYTES),
                n_threads=n_threads,
            )
        grads = {}
        for name, value in params.items():
            if method == "loop":

                def f(w, name=name):
                    return self.loss_batched(x, labels, name, w[None, ...], params=params)[0]

                grads[name] = numerical_gradient(f, self.xp.asarray(value, copy=True), h=h)
            else:
                n, d = x.shape
                work = n * (self.hidden_size + self.output_size) * 3 + d * self.hidden_size
                grads[name] = numerical_gradient_batched(
                    lambda stack, name=name: self.loss_batched(
                        x, labels, name, stack, params=params
                    ),
                    value,
                    h=h,
                    chunk_size=chunk_size,
                    max_bytes=max_bytes,
                    item_bytes=work * itemsize(xp, self.dtype),
                )
        return grads

    # -- persistence ---------------------------------------------------------
    def save(self, path):
        """Save sizes, activation and parameters as ``.npz`` (atomic, no pickle)."""
        arrays = {k: to_numpy(v) for k, v in self._params().items()}
        arrays["sizes"] = np.asarray([self.input_size, self.hidden_size, self.output_size])  # host
        arrays["activation"] = np.asarray(self.activation)  # host
        return save_npz(path, arrays)

    @classmethod
    def load(cls, path, *, backend="numpy", device=None, dtype="float64"):
        """Load a network written by :meth:`save` onto any backend."""
        data = load_npz(path)
        missing = {"sizes", "activation", *PARAM_NAMES} - set(data)
        if missing:
            raise ValueError(f"{path} is not an xpnet network file (missing {sorted(missing)})")
        d, h, c = (int(v) for v in data["sizes"])
        net = cls(
            d, h, c, activation=str(data["activation"]), backend=backend, device=device, dtype=dtype
        )
        net.params = {k: net.backend.from_host(data[k], dtype=net.dtype) for k in PARAM_NAMES}
        net._params()  # validate shapes now, not at first use
        return net
