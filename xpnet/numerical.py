"""The numerical gradient of a model by any method: one entry point for the
network classes, the trainer and the Dask workers.

Rules of this module:

* It takes the model core's pieces (:class:`xpnet.model.ModelSpec`, checked
  layers, a :class:`xpnet.model.Batch`) and a resolved method and step: the
  callers validated them at their boundary. It checks nothing itself.
* ``loop`` and ``batched`` difference :func:`xpnet.model.stacked_loss` (the
  whole loss, decay included); ``structured`` and ``complex`` are
  :mod:`xpnet.structured`, to which this module adds the decay term's central
  difference: the decay is a quadratic, so its difference is exactly ``lambda *
  W`` per coordinate.
* NumPy's BLAS runs one thread while it works (the products are small; threads
  are spent on whole chunks instead, :func:`xpnet.device.host_threads`).
"""

from __future__ import annotations

from array_api_compat import array_namespace
from array_api_compat import device as device_of

from . import model
from .device import free_memory, single_blas_thread
from .gradient import itemsize, memory_budget, numerical_gradient, numerical_gradient_batched
from .structured import HOST_CHUNK_BYTES, HOST_TOTAL_BYTES, structured_gradient

__all__ = ["METHODS", "model_gradient"]

#: Numerical-gradient methods: ``auto`` picks ``structured``.
METHODS = ("auto", "structured", "complex", "batched", "loop")


def model_gradient(
    spec: model.ModelSpec,
    layers,
    batch: model.Batch,
    *,
    h: float,
    method: str,
    chunk_size=None,
    max_bytes=None,
    n_threads=None,
    rows=None,
) -> list:
    """Per layer the stacked ``[dW_l; db_l]`` ``(H_{l-1} + 1, H_l)`` of the loss.

    Parameters
    ----------
    method : {"structured", "complex", "batched", "loop"}
        Resolved (not ``"auto"``).
    rows : list, optional
        Per layer None (skip it) or ``(r0, r1)``: only those rows of ``[W_l;
        b_l]`` (what one task of a sharded gradient computes). ``loop`` and
        ``batched`` compute whole layers and keep the rows.
    chunk_size, max_bytes, n_threads
        Chunking of ``batched``; the memory bound of ``structured``/``complex``
        (``max_bytes``) and their host threads.
    """
    with single_blas_thread(array_namespace(batch.x)):
        if method in ("structured", "complex"):
            return _structured(spec, layers, batch, h, method, max_bytes, n_threads, rows)
        return _perturbed(spec, layers, batch, h, method, chunk_size, max_bytes, rows)


def _structured(spec, layers, batch, h, method, max_bytes, n_threads, rows):
    xp = array_namespace(batch.x)
    device = device_of(batch.x)
    on_host = free_memory(xp, device) is None
    spans = rows if rows is not None else [(0, n + 1) for n in spec.sizes[:-1]]
    blocks = structured_gradient(
        spec,
        layers,
        batch.x,
        batch.t,
        h=h,
        mode="central" if method == "structured" else "complex",
        max_bytes=memory_budget(xp, device, max_bytes, host_default=HOST_TOTAL_BYTES),
        chunk_bytes=HOST_CHUNK_BYTES if on_host else None,
        n_threads=n_threads,
        rows=spans,
    )
    if not spec.weight_decay:
        return blocks
    out = []
    for (W, _), block, span in zip(layers, blocks, spans, strict=True):
        n_decayed = 0 if block is None else min(span[1], W.shape[0]) - span[0]
        if n_decayed > 0:
            # the decay's central difference (and complex step) is exactly lambda * W,
            # on the rows of W (the last row of [W; b] is b's)
            decayed = block[:n_decayed, :] + spec.weight_decay * W[span[0] : span[0] + n_decayed, :]
            block = xp.concat([decayed, block[n_decayed:, :]], axis=0)
        out.append(block)
    return out


def _perturbed(spec, layers, batch, h, method, chunk_size, max_bytes, rows):
    """The loop or the batched method: the whole loss at perturbed parameters,
    for the rows ``span`` of each layer's ``[W; b]`` only."""
    xp = array_namespace(batch.x)
    out = []
    for index, (W, b) in enumerate(layers):
        n_in = W.shape[0]
        span = (0, n_in + 1) if rows is None else rows[index]
        if span is None:
            out.append(None)
            continue
        parts = []
        if span[0] < n_in:  # rows of W
            first, last = span[0], min(span[1], n_in)

            def losses(stack, index=index, first=first, last=last, W=W):
                return model.stacked_loss(
                    spec, layers, batch, index, "W", _with_rows(xp, W, stack, first, last)
                )

            parts.append(
                _difference(losses, W[first:last, :], h, method, chunk_size, max_bytes, spec, batch)
            )
        if span[1] > n_in:  # the bias row

            def bias_losses(stack, index=index):
                return model.stacked_loss(spec, layers, batch, index, "b", stack)

            parts.append(
                _difference(bias_losses, b, h, method, chunk_size, max_bytes, spec, batch)[None, :]
            )
        out.append(parts[0] if len(parts) == 1 else xp.concat(parts, axis=0))
    return out


def _with_rows(xp, W, stack, first, last):
    """``W`` with rows ``first:last`` replaced by each of ``stack`` (K, r, H)."""
    if first == 0 and last == W.shape[0]:
        return stack
    k = stack.shape[0]
    pieces = []
    if first:
        pieces.append(xp.broadcast_to(W[None, :first, :], (k, first, W.shape[1])))
    pieces.append(stack)
    if last < W.shape[0]:
        rest = W.shape[0] - last
        pieces.append(xp.broadcast_to(W[None, last:, :], (k, rest, W.shape[1])))
    return xp.concat(pieces, axis=1)


def _difference(losses, value, h, method, chunk_size, max_bytes, spec, batch):
    """Central differences of ``losses`` (stack -> (K,)) around ``value``."""
    xp = array_namespace(value)
    if method == "loop":
        return numerical_gradient(
            lambda w: losses(w[None, ...])[0], xp.asarray(value, copy=True), h=h
        )
    return numerical_gradient_batched(
        losses,
        value,
        h=h,
        chunk_size=chunk_size,
        max_bytes=max_bytes,
        item_bytes=_forward_bytes(spec, batch) * itemsize(xp, value.dtype),
    )


def _forward_bytes(spec, batch) -> int:
    """Elements one stacked forward pass holds: activations and weights."""
    n = batch.size
    sizes = spec.sizes
    return n * sum(sizes[1:]) * 3 + sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
