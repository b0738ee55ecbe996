"""Accuracy and loss over a whole data set, on the device.

Rules of this module: sets are validated once (:meth:`xpnet.MultiLayerNet.batch`)
and evaluated in batches (bounded memory); sums stay on the device and one
transfer brings accuracy and loss to the host.
"""

from __future__ import annotations

from . import model
from .backend import to_numpy

__all__ = ["evaluate", "evaluate_loss", "set_metrics"]


def evaluate(net, x, t, batch: int = 10_000) -> float:
    """Accuracy over a whole data set, validated once, in batches on the device."""
    if not net.head.has_accuracy:
        net.head.hits(None, None)  # raises the head's message
    return set_metrics(net, net.batch(x, t), batch, net.checked_layers())[0]


def evaluate_loss(net, x, t, batch: int = 10_000) -> float:
    """Mean loss (with weight decay) over a whole data set, validated once, in batches."""
    return set_metrics(net, net.batch(x, t), batch, net.checked_layers())[1]


def set_metrics(net, data: model.Batch, batch: int, layers=None):
    """Accuracy (None for the identity head) and mean loss of a whole validated set
    on the device (``layers``: default ``net.params``, unchecked): sums stay on the
    device, one transfer brings both to the host."""
    xp = net.xp
    layers = model.layers_of(net.params) if layers is None else layers
    n = data.size
    loss_sum, hits_sum, judged = None, None, 0
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        part = model.loss(net.spec, layers, data.rows(start, stop)) * (stop - start)
        loss_sum = part if loss_sum is None else loss_sum + part
        if net.head.has_accuracy:
            hits, total = model.hits(net.spec, layers, data.rows(start, stop))
            hits = xp.astype(hits, net.dtype)
            hits_sum = hits if hits_sum is None else hits_sum + hits
            judged += total
    if hits_sum is None:
        return None, float(to_numpy(loss_sum)) / n
    hits_total, loss_total = (float(v) for v in to_numpy(xp.stack([hits_sum, loss_sum])))
    return hits_total / judged, loss_total / n
