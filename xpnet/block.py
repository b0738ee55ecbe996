"""One sample block's gradient rows, and what its plan needs of its forward pass.

Rules of this module:

* :func:`block_rows` is one sample block of :mod:`xpnet.structured` (whose
  docstring states the gradient's rules): the forward pass and the head's
  cache; each layer's **facts** (what the device knows before the plan:
  :func:`layer_facts`), brought to the host in one transfer
  (:func:`facts_on_host`); each layer's plan (:func:`plan_layers`, from
  :func:`plan_arguments`: :mod:`xpnet.plan` plans, this module only gathers
  its arguments); then the last layer's rows (:func:`output_rows`) and the
  rows of each layer below it (:func:`xpnet.hidden.hidden_rows`).
* The pieces are apart so that a block shared by two processes
  (:mod:`xpnet.shared_block`) runs the same steps in another order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np  # host: unpacking the plan's one transfer
from array_api_compat import device as device_of

from . import model, series
from . import plan as planner
from .backend import to_numpy
from .dtypes import same_dtype
from .heads import HeadCache
from .hidden import hidden_rows

__all__ = [
    "Facts",
    "augmented",
    "block_rows",
    "facts_on_host",
    "last_plan",
    "layer_facts",
    "output_rows",
    "plan_arguments",
    "plan_layers",
    "series_terms",
    "working_layers",
]

_TEMPORARIES = 6  # live temporaries per element of a chunk, with slack
# live arrays per item of a chunk of a layer below the last (measured: larger
# chunks than this budget allows fall out of L2 and run slower)
_LIVE = 5


@dataclass(frozen=True)
class Facts:
    """What the device knows of a layer below the last before the plan: its
    inputs (whose reach the host takes) and what lies above."""

    layer: int
    span: tuple
    inputs: object  # (N, F) the layer's inputs in the span, bias left out; None: on the host
    pre: object  # (N, J) or None: ReLU's pre-activations (the host finds those no step moves)
    gap: object  # (N, J) or None: the least |dz| of a unit that may reach a ReLU kink above
    moves: list | None  # series of the score change (ReLU above: exact, linear)
    bound: object  # 0-d: what |dz| multiplies to bound the score change; (J, C): see below


def _columns(z, span):
    """The columns ``span`` of ``z`` (the bias's column left out: it is 1)."""
    if span[0] == 0 and span[1] >= z.shape[1]:
        return z
    return z[:, span[0] : min(span[1], z.shape[1])]


def augmented(xp, z, span):
    """``[z, 1]`` restricted to the columns ``span`` (the last column is the bias's)."""
    if span[1] <= z.shape[1]:
        return _columns(z, span)
    ones = xp.ones((z.shape[0], 1), dtype=z.dtype, device=device_of(z))
    return xp.concat([_columns(z, span), ones], axis=1)


def working_layers(ctx, layers):
    """The layers in the working dtype: complex activations need complex
    weights for the complex step (torch does not promote)."""
    if ctx.central:
        return layers
    return [(ctx.xp.astype(W, ctx.work), ctx.xp.astype(b, ctx.work)) for W, b in layers]


def block_rows(ctx, layers, work_layers, x, t, x_host, spans):
    """The gradient rows of one sample block (a list like structured_gradient's)."""
    xp, spec = ctx.xp, ctx.spec
    a, z = model.forward(spec, layers, x)
    cache = spec.head.cache(a[-1], t)
    last = len(layers) - 1
    facts = {}
    for layer, span in enumerate(spans[:-1]):
        if span is not None:
            facts[layer] = layer_facts(ctx, layers, a, z, layer, span, x_host)
    plans = plan_layers(ctx, spec, facts, x_host, spans)
    grads = []
    for layer, span in enumerate(spans):
        if span is None:
            grads.append(None)
        elif layer == last:
            inputs = augmented(xp, z[layer], span)
            grads.append(output_rows(ctx, plans[layer], inputs, cache))
        else:
            grads.append(
                hidden_rows(ctx, plans[layer], facts[layer], layers, work_layers, a, z, cache)
            )
    return grads


# -- what the device computes before the plan --------------------------------------
def _lip(ctx) -> float:
    """|dz| <= lip * |u|: the sigmoid's slope is at most 1/4 on the real line (and
    at most 1 near it, where the complex step moves); ReLU's at most 1."""
    return 0.25 if (ctx.spec.activation == "sigmoid" and ctx.central) else 1.0


def layer_facts(ctx, layers, a, z, layer, span, x_host) -> Facts:
    """The :class:`Facts` of ``layer`` below the last, from the forward pass ``a``,
    ``z`` (a layer 0 of sigmoids with the head right above needs neither)."""
    xp, spec = ctx.xp, ctx.spec
    relu = spec.activation == "relu"
    above = len(layers) - 2 - layer  # hidden layers above this one
    # the inputs' reach per sample is taken on the host (from x, or the inputs sent
    # for the plan), which also compares it with the gaps to the kinks above
    inputs = None if layer == 0 else _columns(z[layer], span)
    pre = a[layer] if relu else None  # the host finds the ReLUs no step moves
    gap, moves = None, None
    if above == 0 or relu:  # the score row moves by exactly dz * V[j, :]
        if above == 0:  # the head right above: V = W, (J, C), shared by every sample
            moves = [None, layers[-1][0]]
        else:
            moves, gap = _relu_moves(ctx, layers, a, layer)
        # |dz (V_c - V_c')| <= |dz| * the largest spread of a row; the head's
        # weights (J, C) go to the host, which takes it (no reductions here)
        V = moves[1]
        bound = V if above == 0 else xp.max(xp.max(V, axis=-1) - xp.min(V, axis=-1))
    else:
        # sigmoid layers above: |x_l'| <= |dz| * beta_l' elementwise (slopes <= 1 in
        # the strip |Im| < pi/2), beta by products of |W|; the largest sets the
        # series' radius (docs/numerical-gradient.md)
        beta = xp.abs(layers[layer + 1][0])
        bound = xp.max(beta)
        for W, _ in layers[layer + 2 :]:
            beta = beta @ xp.abs(W)
            bound = xp.maximum(bound, xp.max(beta))
    return Facts(layer, span, inputs, pre, gap, moves, bound)


def _relu_moves(ctx, layers, a, layer):
    """ReLU layers above unit ``j`` of ``layer``: while no ReLU above crosses its
    kink, the scores move by exactly ``dz * V[n, j, :]``, ``V`` the product of
    ``W`` rows masked by the active units. Also each unit's **gap**: the least
    ``|dz|`` whose move may reach a kink above, ``min |a_l'[n, k]| / |V_l'[n, j,
    k]|`` over the units ``k`` of every ReLU layer ``l'`` above (a move of
    ``|dz|`` below it crosses none), as a product with ``1 / |V|``, ``|V|``
    taken at least ``eps^2`` and ``|a|`` at most ``eps^-2``: never above the
    quotient, no division by 0, no overflow (a smaller gap only sends more
    items to the direct path; ``a = 0`` gives 0 even where ``V`` is 0)."""
    xp = ctx.xp
    n_samples, n_units = a[layer].shape
    widest = max(W.shape[1] for W, _ in layers[layer + 1 :])
    per_sample = max(1, n_units * widest * ctx.itemsize * _TEMPORARIES)
    floor = ctx.eps**2

    def chunk(n0, n1):
        v = layers[layer + 1][0]  # (J, H): the move of a_{l+1} per unit dz
        gap = None
        for k in range(layer + 1, len(layers) - 1):
            pre = a[k][n0:n1, None, :]  # (n, 1, H)
            inverse = 1.0 / xp.clip(xp.abs(v), min=floor)
            least = xp.min(xp.clip(xp.abs(pre), max=1.0 / floor) * inverse, axis=-1)  # (n, J)
            gap = least if gap is None else xp.minimum(gap, least)
            v = xp.where(pre > 0, v, xp.zeros_like(v)) @ layers[k + 1][0]
        v = xp.broadcast_to(v, (n1 - n0, *v.shape[-2:]))
        return xp.concat([v, gap[..., None]], axis=-1)

    both = ctx.chunked(n_samples, ctx.chunk_bytes // per_sample, chunk)
    return [None, both[..., :-1]], both[..., -1]


def facts_on_host(ctx, facts, x_host) -> dict:
    """What planning needs of the layers' facts, ``{(layer, name): host array}``,
    brought over in one transfer (the first layer's from ``x_host``)."""
    xp = ctx.xp
    scalars = [(layer, "bound", f.bound) for layer, f in facts.items() if not f.bound.ndim]
    arrays = [(layer, "bound", f.bound) for layer, f in facts.items() if f.bound.ndim]
    for layer, fact in facts.items():
        if fact.inputs is not None:  # the first layer's inputs are x, already on the host
            arrays.append((layer, "inputs", fact.inputs))
        for name in ("pre", "gap"):
            if getattr(fact, name) is not None:
                arrays.append((layer, name, getattr(fact, name)))
    host: dict = {}
    layout = scalars + arrays
    if not layout:  # no layer below the last
        return host
    if len(layout) == 1:  # one transfer
        flat = to_numpy(layout[0][2]).reshape(-1)
    else:  # the scalars stacked, the arrays flat, in the network's dtype
        parts = [xp.stack([array for _, _, array in scalars])] if scalars else []
        for _, _, array in arrays:
            same = same_dtype(xp, array.dtype, ctx.real)
            parts.append(xp.reshape(array if same else xp.astype(array, ctx.real), (-1,)))
        flat = to_numpy(parts[0] if len(parts) == 1 else xp.concat(parts))
    offset = 0
    for layer, name, array in layout:
        size = math.prod(array.shape)
        host[(layer, name)] = flat[offset : offset + size].reshape(tuple(array.shape))
        offset += size
    for layer, fact in facts.items():  # the inputs with the bias's column, their reach
        if host[(layer, "bound")].ndim:  # the head's weights: the largest row spread
            host[(layer, "bound")] = np.max(np.ptp(host[(layer, "bound")], axis=-1))  # host
        columns, span = x_host, fact.span
        if layer > 0:  # the transferred columns of the span
            columns, span = host[(layer, "inputs")], (0, fact.span[1] - fact.span[0])
        host[(layer, "inputs")] = planner.input_columns(columns, span)
        reach = planner.input_reach(columns, span, ctx.h)  # host: per sample
        host[(layer, "reach")] = _lip(ctx) * float(np.max(reach, initial=0.0))  # host
        if (layer, "pre") in host:  # ReLU: the units no step moves, the kinks (the
            # units' own on the host, whose series takes no move per item: hidden)
            pre, gap = host.pop((layer, "pre")), host.pop((layer, "gap"), None)
            still, kink = planner.relu_kinks(pre, gap, reach, ctx.h, own=ctx.host)
            host[(layer, "still")], host[(layer, "kink")] = still, kink
    return host


def plan_layers(ctx, spec, facts, x_host, spans):
    """Bring what planning needs to the host in one transfer; plan every layer."""
    host = facts_on_host(ctx, facts, x_host)
    plans = {f: planner.layer_plan(**plan_arguments(ctx, spec, host, f, facts[f])) for f in facts}
    last = len(spans) - 1
    if spans[last] is not None:
        plans[last] = last_plan(ctx, spec, spans[last], x_host.shape[0])
    return plans


def plan_arguments(ctx, spec, host, layer, fact) -> dict:
    """The arguments of :func:`xpnet.plan.layer_plan` for a layer below the last,
    from what :func:`facts_on_host` brought to the host."""
    reach, bound = float(host[(layer, "reach")]), float(host[(layer, "bound")])
    terms, log_terms = series_terms(ctx, spec, layer, reach * bound)
    step = ctx.itemsize * ctx.n_steps  # one working element per step
    # live arrays per item: the unit's move, the series' value and a few more
    # (a score row where the head is separable)
    series_width = _LIVE if spec.output == "softmax" else _LIVE + 3 * spec.sizes[-1]
    # a direct item carries a row of every layer above
    direct_width = _LIVE + 3 * sum(spec.sizes[layer + 1 :])
    return {
        "layer": layer,
        "span": fact.span,
        "z": host[(layer, "inputs")],
        "n_units": spec.sizes[layer + 1],
        "still": host.get((layer, "still")),
        "kink": host.get((layer, "kink")),
        "terms": terms,
        "series_item_bytes": step * series_width,
        "direct_item_bytes": step * direct_width,
        "chunk_bytes": ctx.chunk_bytes,
        "result_itemsize": ctx.itemsize,
        "log_terms": log_terms,
    }


def last_plan(ctx, spec, span, n_samples):
    """The last layer's plan (:func:`xpnet.plan.output_plan`)."""
    per_input = ctx.itemsize * ctx.n_steps * _LIVE * spec.sizes[-1] * n_samples
    return planner.output_plan(len(spec.sizes) - 2, span, per_input, ctx.chunk_bytes)


def series_terms(ctx, spec, layer, rho) -> tuple:
    """Series terms for a layer (None: evaluate directly), from the largest
    ``|dz| * bound`` over the block (:mod:`xpnet.series`); and the terms of ``2
    atanh(y)`` in place of the softmax's ``log(q- / q+)`` on the host (None: the
    log; on a device it is one launch, its series several). Where the scores
    move linearly in ``dz``, every score gap moves by at most ``rho`` per step:
    ``|log(q-/q+)| <= 2 rho`` (``log q_t`` and ``log(q_t + 1e-7)`` are
    1-Lipschitz in the gaps), ``|y| = tanh(|log| / 2) <= rho``, taken as ``2
    rho`` for the rounding of ``q`` (docs/numerical-gradient.md)."""
    complex_step = not ctx.central
    softmax = spec.output == "softmax"
    if len(spec.sizes) - 3 - layer == 0 or spec.activation == "relu":  # linear in dz
        if not softmax:
            return 2, None  # the scores themselves: dz * V, nothing left out
        terms = series.terms_for_linear(rho, ctx.eps, complex_step=complex_step)
        host_log = ctx.host and ctx.central and terms is not None
        return terms, series.terms_for_atanh(2.0 * rho, ctx.eps) if host_log else None
    order = 1 if (complex_step or not softmax) else 0
    growth = 2.0 if softmax else 0.0
    return series.terms_for_cauchy(rho, ctx.eps, growth=growth, order=order), None


# -- the last layer ------------------------------------------------------------------
def output_rows(ctx, plan, inputs, cache: HeadCache):
    """Rows ``span`` of ``[dW_L; db_L]``: score column ``k`` moves by ``step * z[n, i]``."""
    head = ctx.spec.head
    columns = inputs.T  # (I, N)

    def compute(i0, i1):
        delta = ctx.steps * ctx.part(columns, i0, i1)  # (S, I, N)
        return head.column_differences(cache, delta, ctx)

    return ctx.chunked(columns.shape[0], plan.chunk, compute)
