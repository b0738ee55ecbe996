"""The network as plain functions of a frozen spec and a list of layers.

Rules of this module:

* A model is a :class:`ModelSpec` (layer sizes, hidden activation, head, weight
  decay) and a list of ``(W, b)`` pairs, one per affine layer: ``a_l = z_l @ W_l +
  b_l`` with ``z_0 = x`` and ``z_{l+1} = act(a_l)``; the head turns the last ``a``
  into per-sample loss terms; the loss is their mean plus ``0.5 * lambda *
  sum_l ||W_l||^2``. One pair is a linear (softmax regression) model.
* Everything here is stateless and unchecked: the network classes
  (:mod:`xpnet.network`) validate at the boundary once and hand over a
  :class:`Batch` and checked layers. The forward pass is written here once; the
  book's API, training, evaluation, the loop and batched numerical gradients,
  the structured gradient's direct evaluations and the Dask workers all call it.
* The namespace comes from the arrays (``array_namespace``); nothing here names
  an array library.
* Leading axes broadcast: ``forward`` and ``loss_terms`` accept inputs of shape
  ``(..., N, D)`` and layers whose parameters carry leading axes (a stack of
  perturbed copies of one parameter), which is what the batched method feeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from array_api_compat import array_namespace
from array_api_compat import device as device_of

from .functions import ACTIVATIONS
from .heads import Head, get_head

__all__ = [
    "ModelSpec",
    "Batch",
    "forward",
    "loss_terms",
    "loss",
    "decay_term",
    "hits",
    "backprop",
    "stacked_loss",
    "layers_of",
    "params_of",
]


@dataclass(frozen=True)
class ModelSpec:
    """What defines a network apart from its parameters.

    Attributes
    ----------
    sizes : tuple of int
        ``(D, H1, ..., C)``: inputs, hidden layers, outputs (two sizes: no hidden
        layer).
    activation : str
        Hidden activation, a key of :data:`xpnet.functions.ACTIVATIONS`.
    output : str
        Head, a key of :data:`xpnet.heads.HEADS`.
    weight_decay : float
        ``lambda >= 0`` of the decay term.
    """

    sizes: tuple
    activation: str = "relu"
    output: str = "softmax"
    weight_decay: float = 0.0

    @property
    def head(self) -> Head:
        return get_head(self.output)

    @property
    def n_layers(self) -> int:
        """Affine layers (hidden layers + 1)."""
        return len(self.sizes) - 1

    def param_shapes(self) -> dict:
        """``{"W1": (D, H1), "b1": (H1,), ...}`` in the book's order."""
        shapes: dict[str, tuple[int, ...]] = {}
        for k, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True), 1):
            shapes[f"W{k}"], shapes[f"b{k}"] = (n_in, n_out), (n_out,)
        return shapes


@dataclass(frozen=True)
class Batch:
    """Inputs and targets checked once at a network's boundary.

    ``x`` is ``(N, D)`` in the network's dtype on its device; ``t`` is what the
    head takes internally: ``(N,)`` int64 labels (softmax) or ``(N, C)`` arrays in
    the network's dtype (sigmoid, identity). Only validating code builds one
    (:meth:`xpnet.MultiLayerNet.batch`); the functions here trust it.
    """

    x: Any
    t: Any

    @property
    def size(self) -> int:
        return self.x.shape[-2]

    def rows(self, start: int, stop: int) -> Batch:
        """Samples ``start:stop`` (a view where the backend has views)."""
        return Batch(self.x[start:stop, ...], self.t[start:stop, ...])

    def take(self, index) -> Batch:
        """The samples at ``index`` (a device integer array), e.g. a minibatch."""
        xp = array_namespace(self.x)
        return Batch(xp.take(self.x, index, axis=0), xp.take(self.t, index, axis=0))


def layers_of(params: dict) -> list:
    """``[(W1, b1), (W2, b2), ...]`` of the book's ``params`` dict (unchecked)."""
    return [(params[f"W{k}"], params[f"b{k}"]) for k in range(1, len(params) // 2 + 1)]


def params_of(layers) -> dict:
    """The book's ``{"W1": ..., "b1": ..., ...}`` of a list of layers."""
    out = {}
    for k, (W, b) in enumerate(layers, 1):
        out[f"W{k}"], out[f"b{k}"] = W, b
    return out


def forward(spec: ModelSpec, layers, x, *, start: int = 0):
    """Pre-activations and activations of every layer from ``start`` on.

    Parameters
    ----------
    spec : ModelSpec
    layers : list of (W, b)
        ``W (H_{l-1}, H_l)``, ``b (H_l,)``, or with leading stack axes.
    x : array (..., N, H_{start-1})
        The input of layer ``start`` (``z_start``; the network's input for 0).

    Returns
    -------
    (a, z) : lists of arrays
        ``a[k]`` is the pre-activation of layer ``start + k``; ``z[k]`` its input
        (``z[0] = x``).
    """
    act = ACTIVATIONS[spec.activation].function
    z, a = [x], []
    last = len(layers) - 1
    for index in range(start, len(layers)):
        W, b = layers[index]
        a.append(z[-1] @ W + b)
        if index < last:
            z.append(act(a[-1]))
    return a, z


def loss_terms(spec: ModelSpec, layers, x, t):
    """Per-sample loss terms of the head, shape ``x.shape[:-1]`` (no decay)."""
    return spec.head.losses(forward(spec, layers, x)[0][-1], t)


def decay_term(spec: ModelSpec, layers):
    """``0.5 * lambda * sum ||W||^2`` as a 0-d array (0 when lambda is 0)."""
    W0 = layers[0][0]
    xp = array_namespace(W0)
    total = xp.zeros((), dtype=W0.dtype, device=device_of(W0))
    if spec.weight_decay:
        for W, _ in layers:
            total = total + xp.sum(W * W)
        total = 0.5 * spec.weight_decay * total
    return total


def loss(spec: ModelSpec, layers, batch: Batch):
    """The loss: mean of the head's terms plus the decay term (0-d array)."""
    xp = array_namespace(batch.x)
    terms = loss_terms(spec, layers, batch.x, batch.t)
    mean = xp.sum(terms) / batch.size
    return mean + decay_term(spec, layers) if spec.weight_decay else mean


def hits(spec: ModelSpec, layers, batch: Batch):
    """Correct predictions (0-d array on the device) and how many were judged."""
    head = spec.head
    return head.hits(head.output(forward(spec, layers, batch.x)[0][-1]), batch.t)


def backprop(spec: ModelSpec, layers, batch: Batch) -> list:
    """Gradient of :func:`loss` by backpropagation: ``[(dW_1, db_1), ...]``.

    As in the book, the head's ``+1e-7`` inside its logs is not differentiated,
    which changes the gradient by about 1e-6 (relative) against the numerical one.
    """
    xp = array_namespace(batch.x)
    a, z = forward(spec, layers, batch.x)
    head = spec.head
    derivative = ACTIVATIONS[spec.activation].derivative
    da = head.delta(head.output(a[-1]), batch.t) / batch.size
    grads: list[Any] = [None] * len(layers)
    for k in range(len(layers) - 1, -1, -1):
        W = layers[k][0]
        dW = z[k].T @ da  # .T: a view, no copy
        if spec.weight_decay:
            dW = dW + spec.weight_decay * W
        grads[k] = (dW, xp.sum(da, axis=0))
        if k:
            da = derivative(a[k - 1], z[k]) * (da @ W.T)
    return grads


def stacked_loss(spec: ModelSpec, layers, batch: Batch, layer: int, which: str, stack):
    """Losses for a stack of values of one parameter, the others fixed.

    Parameters
    ----------
    layer : int
        Index of the layer whose ``W`` (``which="W"``) or ``b`` (``"b"``) varies.
    stack : array (K, *shape)
        ``K`` values of that parameter.

    Returns
    -------
    array (K,)
        The loss (with decay) at each value: what the loop and batched numerical
        gradients difference.
    """
    xp = array_namespace(stack)
    stacked = []
    for index, (W, b) in enumerate(layers):
        if index == layer:
            W, b = (stack, b) if which == "W" else (W, stack)
        # b broadcasts over the samples of each stacked network: (K, 1, H)
        stacked.append((W, b[:, None, :] if b.ndim == 2 else b))
    terms = loss_terms(spec, stacked, batch.x, batch.t)  # (K, N) or (N,)
    if terms.ndim == 1:
        terms = terms[None, :]
    losses = xp.sum(terms, axis=-1) / batch.size
    if spec.weight_decay:
        fixed = sum(xp.sum(W * W) for index, (W, _) in enumerate(layers) if index != layer)
        if which == "W":
            moving = xp.sum(xp.reshape(stack * stack, (stack.shape[0], -1)), axis=1)
        else:
            W = layers[layer][0]
            moving = xp.sum(W * W)
        losses = losses + 0.5 * spec.weight_decay * (moving + fixed)
    return losses
