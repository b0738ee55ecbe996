"""The context of one structured numerical gradient, and how its work is run.

Rules of this module:

* A :class:`Context` is made once per gradient (:func:`make_context`) and passed
  to every piece of work: namespace, model spec, the steps as arrays in the
  working dtype, the scale of the central difference or complex step, byte
  budgets and thread count. It is frozen; nothing here keeps state between
  gradients but the idle helper threads of :meth:`Context.run` (and the helper
  processes of :mod:`xpnet.procs`).
* Work is run four ways, all here: a module-level function over parts in
  helper processes, or on threads where none is ready (:meth:`Context.map`,
  NumPy only; :mod:`xpnet.procs`); tasks on ``n_threads`` threads with the
  calling thread working too (:meth:`Context.run`, NumPy only; the helper
  threads are kept between gradients, and a caller never waits for a helper
  that has not started, so that runs may nest); ranges in chunks
  within a byte budget (:meth:`Context.chunked`) or in planned pieces
  (:meth:`Context.in_pieces`; with a :attr:`Context.team`, shared by two
  processes, :mod:`xpnet.team`); a chunk that runs out of memory computed as its
  two halves instead (:meth:`Context.split_on_oom`).
* The two perturbed losses of an item are combined here, once: their
  difference, or a ratio under one log for losses ``-log(q)``, unscaled (the
  gradient's rows are multiplied by ``scale`` once, when the blocks are added).
* Blocks' results are added in the blocks' order (:func:`added_in_order`),
  whichever thread or process computed them: the bits depend on the blocks only.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from array_api_compat import device as device_of

from . import model, procs, series
from . import plan as planner
from .backend import host_namespace, is_numpy
from .device import host_threads, out_of_memory_errors
from .dtypes import dtype_info

__all__ = ["Context", "added_in_order", "central_steps", "make_context"]


@dataclass(frozen=True)
class Context:
    """What every piece of one structured gradient's work needs: namespace,
    model, steps, budgets; and how work is run (threads, chunks, retries)."""

    xp: object
    spec: model.ModelSpec
    steps: object  # (S, 1, 1) the perturbation steps, in the working dtype
    central: bool
    h: float
    scale: float  # 1 / (2 h N) or 1 / (h N)
    real: object  # the network's dtype
    work: object  # real (central) or its complex dtype (complex step)
    itemsize: int  # bytes of one working element
    eps: float
    chunk_bytes: int
    n_threads: int
    oom: tuple
    host: bool  # NumPy: the host's caches and threads
    # terms of the series that takes the place of the log in negative_log (None:
    # the log), where the plan bounds the log's argument (see negative_log)
    log_terms: int | None = None
    # a team's Link (xpnet.team): in_pieces shares its pieces with the other side
    team: object = None

    @property
    def n_steps(self) -> int:
        return 2 if self.central else 1

    def loss(self, moved):
        """Perturbed losses (S, ...) (or a list of the S steps') -> their
        contribution to the gradient, unscaled: ``L+ - L-``, or ``Im L`` (the
        sums of whole blocks are multiplied by :attr:`scale` once, not every item)."""
        if self.central:
            plus, minus = moved if isinstance(moved, list) else self.xp.unstack(moved)
            return plus - minus
        return self.xp.imag(moved[0, ...])

    def negative_log(self, q):
        """The same for losses ``-log(q)``: ``log(q-) - log(q+)`` as one log.

        With :attr:`log_terms` (set where the plan bounds ``|y|``, below), as
        ``2 atanh(y)``, ``y = (q- - q+) / (q- + q+)``, by its series ``sum
        y^(2k+1) / (2k+1)`` with a remainder below rounding
        (:func:`xpnet.series.terms_for_atanh`): an identity, no log (on NumPy a
        log costs a dozen multiplications), and no cancellation (``q- - q+`` is
        exact)."""
        xp = self.xp
        if self.central:
            q_plus, q_minus = q if isinstance(q, list) else xp.unstack(q)
            if self.log_terms is None:
                return xp.log(q_minus / q_plus)
            y = q_minus - q_plus
            y /= q_minus + q_plus
            # 2 atanh(y) = y (2 + 2/3 y^2 + 2/5 y^4 + ...), by Horner's rule in y^2
            if self.log_terms == 1:
                y *= 2.0
                return y
            coefficients = [2.0 / (2 * k + 1) for k in range(self.log_terms)]
            value = series.horner(coefficients, y * y)
            value *= y
            return value
        return -xp.imag(xp.log(q[0, ...]))

    def run(self, tasks):
        """Results of ``tasks`` in order, on ``n_threads`` threads (NumPy only)."""
        if self.n_threads <= 1 or len(tasks) <= 1:
            return [task() for task in tasks]
        results = [None] * len(tasks)
        pending = iter(range(1, len(tasks)))  # the first is the calling thread's
        lock = threading.Lock()

        def work():
            while True:
                with lock:
                    index = next(pending, None)
                if index is None:
                    return
                results[index] = tasks[index]()

        # the calling thread works too: its core is busy, so the scheduler wakes
        # the pool's threads on the other cores at once; it takes the first task,
        # which a plan may make the largest (the others start later)
        workers = min(self.n_threads, len(tasks)) - 1
        futures = _POOL.submit(work, workers)
        results[0] = tasks[0]()
        work()
        for future in futures:
            # a helper that has not started finds nothing left to do: not waited
            # for (its thread may be busy elsewhere, even waiting for this one)
            if not future.cancel():
                future.result()
        return results

    def __reduce__(self):
        """Pickled for a helper process (NumPy contexts only) as plain Python
        values, made NumPy's again on the other side: pickling the spec, the
        dtypes, the steps array and the error classes themselves took 0.14 ms
        with cold caches (as plain values: 0.06 ms), on the serial path of every
        gradient handed to helpers."""
        spec, info = self.spec, dtype_info(self.xp, self.real)
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("xp", "spec", "steps", "real", "work", "oom", "team"):
            del plain[name]
        spec_fields = tuple(getattr(spec, f.name) for f in dataclasses.fields(spec))
        return (_unpickled, (spec_fields, self.steps.tolist(), info.name, info.complex_name, plain))

    def map(self, function, common, parts, *, views=False):
        """``function(*common, *part)`` for each of ``parts``, yielded in order,
        ``n_threads`` at a time (a round's results are held until it ends): in
        helper processes where they are ready (:mod:`xpnet.procs`), else on
        threads. ``function`` is a module-level function of xpnet; ``common`` and
        ``parts`` hold NumPy arrays and plain picklable values. ``views``: a
        helper's result is valid only until the next one is asked for
        (:func:`xpnet.procs.run`)."""
        if self.n_threads > 1 and len(parts) > 1 and procs.helpers(self.n_threads - 1):
            yield from procs.run(function, common, parts, self.n_threads - 1, views=views)
            return
        for lo, hi in planner.chunks(len(parts), self.n_threads):
            yield from self.run([lambda p=p: function(*common, *p) for p in parts[lo:hi]])

    def split_on_oom(self, compute, lo, hi):
        """``compute(lo, hi)``; a chunk that runs out of memory is computed as its
        two halves instead (same arithmetic), down to single items. Only the
        failing chunk is retried."""
        try:
            return compute(lo, hi)
        except self.oom:
            if hi - lo <= 1:
                raise
            mid = (lo + hi) // 2
            halves = [self.split_on_oom(compute, lo, mid), self.split_on_oom(compute, mid, hi)]
            return self.xp.concat(halves, axis=0)

    def part(self, array, start, stop, axis: int = 0):
        """``array[start:stop]`` along ``axis`` (the first by default); the array
        itself where that is all of it (a slice is an operation on some devices)."""
        if start == 0 and stop == array.shape[axis]:
            return array
        return array[(slice(None),) * axis + (slice(start, stop), ...)]

    def chunked(self, count, size, compute):
        """``compute(lo, hi)`` over ``range(count)`` in chunks, concatenated."""
        return self.in_pieces(planner.chunks(count, size), compute)

    def in_pieces(self, bounds, compute):
        """``compute(lo, hi)`` for each ``(lo, hi)`` of ``bounds``, concatenated
        (with a :attr:`team`, shared with its other side where it can be)."""
        if self.team is not None:
            shared = self.team.pieces(bounds, lambda lo, hi: self.split_on_oom(compute, lo, hi))
            if shared is not None:
                return shared
        tasks = [(lambda lo=lo, hi=hi: self.split_on_oom(compute, lo, hi)) for lo, hi in bounds]
        parts = self.run(tasks)
        return parts[0] if len(parts) == 1 else self.xp.concat(parts, axis=0)


def _unpickled(spec_fields, steps, real_name, complex_name, plain) -> Context:
    xp = host_namespace()
    real = xp.empty(0, dtype=getattr(xp, real_name)).dtype  # as make_context's: x.dtype
    work = real if plain["central"] else getattr(xp, complex_name)
    steps = xp.asarray(steps, dtype=work)  # the same bits: exact as Python numbers
    spec, oom = model.ModelSpec(*spec_fields), out_of_memory_errors(xp)
    return Context(xp=xp, spec=spec, steps=steps, real=real, work=work, oom=oom, **plain)


class _Pool:
    """The helper threads of :meth:`Context.run`, kept between gradients
    (starting and joining a thread pool per gradient took 0.26 ms here, before
    any work could start); grown when more are asked for, dropped in a forked
    child (its threads stay in the parent)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pool = None
        self.size = 0

    def submit(self, task, workers: int) -> list:
        """``task`` on ``workers`` helper threads: futures. Submitted under the
        lock, so that no other caller shuts the pool down in between."""
        with self.lock:
            if self.pool is None or self.size < workers:
                if self.pool is not None:
                    self.pool.shutdown(wait=False)  # its threads end once idle
                self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xpnet")
                self.size = workers
            return [self.pool.submit(task) for _ in range(workers)]

    def forked(self):
        self.__init__()


_POOL = _Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.forked)


def added_in_order(results):
    """The sum of per-block results, each a list of arrays (None where a
    layer is skipped), added in the order given: the same bits whichever
    thread or process computed each."""
    total = None
    for part in results:
        if total is None:
            total = part
        else:
            total = [None if u is None else u + v for u, v in zip(total, part, strict=True)]
    return total


def central_steps(h: float) -> tuple[float, float]:
    """A central difference's steps in the order of ``Context.steps`` (and of
    the perturbed losses that :meth:`Context.loss` unstacks): ``+h``, then ``-h``."""
    return (h, -h)


def make_context(xp, spec, x, h, mode, chunk_bytes, n_threads) -> Context:
    real = x.dtype
    info = dtype_info(xp, real)
    dev = device_of(x)
    n_samples = x.shape[0]
    if mode == "central":
        steps = list(central_steps(h))
        work, itemsize, scale = real, info.itemsize, 1.0 / (2 * h * n_samples)
    else:
        work = info.complex(xp)
        try:
            if work is None:
                raise TypeError(f"{info.complex_name} is missing")
            steps = [1j * h]
            xp.asarray(steps, dtype=work, device=dev)  # complex arrays are supported
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"method='complex' needs complex dtypes on this backend: {exc}"
            ) from exc
        itemsize, scale = 2 * info.itemsize, 1.0 / (h * n_samples)
    threads = host_threads(n_threads) if is_numpy(xp) else 1
    return Context(
        xp,
        spec,
        xp.asarray([[[s]] for s in steps], dtype=work, device=dev),
        mode == "central",
        float(h),
        scale,
        real,
        work,
        itemsize,
        info.eps,
        chunk_bytes,
        threads,
        out_of_memory_errors(xp),
        is_numpy(xp),
    )
