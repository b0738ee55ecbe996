"""One sample block on two processes: a net with one sigmoid hidden layer (the
book's) on two cores, its work shared by the caller and one helper process.

Rules of this module:

* It is :mod:`xpnet.structured`'s path where that has exactly two threads of
  work, NumPy, one sigmoid hidden layer, every row (no shard), the whole batch
  one block and a helper ready (:func:`xpnet.procs.team`). Split in sample
  blocks instead, each block would redo the forward pass, its plan's fixed part
  and its last-layer rows, and a static split cannot follow two cores that run
  at different speeds (docs/benchmarks.md).
* The steps are :mod:`xpnet.block`'s, in another order. The caller makes the
  hidden layer's plan arguments (from the inputs and the head's weights: no
  forward pass needed) and hands them to the helper, which plans
  (:func:`xpnet.plan.layer_plan`: the one plan both sides use); meanwhile the
  caller runs the forward pass, the last layer's rows and the hidden layer's
  series coefficients and sends what the rows need. Then both run
  :func:`xpnet.hidden.hidden_rows` on the same values, its loops shared
  (:mod:`xpnet.team`): every perturbed loss is the one the one-process path
  computes, with the same arithmetic.
* A broken team (the helper failed or ended): the caller plans, if the plan
  has not come, and computes the rest alone.
"""

from __future__ import annotations

from dataclasses import replace

from . import block, model
from . import plan as planner
from .hidden import hidden_rows, series_coefficients
from .team import TeamBroken

__all__ = ["suits", "gradient_rows"]


def suits(ctx, spans) -> bool:
    """Whether a gradient may take this path (besides one block and a helper)."""
    sizes = ctx.spec.sizes
    every_row = list(spans) == [(0, n + 1) for n in sizes[:-1]]
    return ctx.host and len(sizes) == 3 and ctx.spec.activation == "sigmoid" and every_row


def gradient_rows(ctx, link, layers, x, t) -> list:
    """The unscaled ``[dW_1; db_1]`` and ``[dW_2; db_2]`` of the whole batch,
    computed with the helper at ``link`` (``ctx`` of one thread)."""
    spec, xp = ctx.spec, ctx.xp
    try:
        link.start(_helper, (ctx, layers, x))
    except TeamBroken:
        pass  # alone: every step below goes on without the helper
    a, z = model.forward(spec, layers, x)
    cache = spec.head.cache(a[-1], t)
    fact, arguments = _plan_arguments(ctx, layers, x)  # as the helper's: the same terms
    span = (0, spec.sizes[1] + 1)
    last = block.last_plan(ctx, spec, span, x.shape[0])
    output = block.output_rows(ctx, last, block.augmented(xp, z[1], span), cache)
    coefficients = series_coefficients(ctx, fact, arguments["terms"], layers, z, cache)
    try:
        link.send((a, z[1], cache, coefficients))  # the helper has the rest
        plan = link.receive()
    except TeamBroken:
        plan = planner.layer_plan(**arguments)
    work = block.working_layers(ctx, layers)
    rows = hidden_rows(replace(ctx, team=link), plan, fact, layers, work, a, z, cache, coefficients)
    try:
        link.finish()
    except TeamBroken:
        pass  # the rows are the caller's own by now
    return [xp.asarray(rows, copy=True), output]  # not a view of the team memory


def _plan_arguments(ctx, layers, x):
    """The hidden layer's facts (from the head's weights: no forward pass) and
    its plan's arguments (:func:`xpnet.block.plan_arguments`)."""
    span = (0, ctx.spec.sizes[0] + 1)
    fact = block.layer_facts(ctx, layers, None, None, 0, span, x)
    host = block.facts_on_host(ctx, {0: fact}, x)
    return fact, block.plan_arguments(ctx, ctx.spec, host, 0, fact)


def _helper(link, ctx, layers, x):  # pragma: no cover  (runs in the helper process)
    """The helper's side: plan, send the plan, then the rows' shared loops."""
    fact, arguments = _plan_arguments(ctx, layers, x)
    plan = planner.layer_plan(**arguments, sums=False)
    link.send(plan)  # the caller starts the series with it, while the sums are planned
    sums = planner.layer_sums(plan.pairs, plan.n_units, ctx.itemsize, ctx.chunk_bytes)
    link.send(sums)
    plan = replace(plan, sums=sums)
    a, z1, cache, coefficients = link.receive()
    work = block.working_layers(ctx, layers)
    team = replace(ctx, team=link)
    hidden_rows(team, plan, fact, layers, work, a, [x, z1], cache, coefficients)
