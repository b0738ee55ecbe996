"""Helper processes for host work: every core, no GIL between them.

Threads of one interpreter hand the GIL to each other around every NumPy
operation; on a small VM each hand-off costs tens of microseconds and a
gradient makes dozens (``scripts/bench_threads.py``). Processes do not share a
GIL. This module keeps a few helper processes and runs module-level functions
of xpnet in them.

Rules of this module:

* Host (NumPy) work only, on Linux (``os.memfd_create``); elsewhere, or with
  ``$XPNET_PARALLEL=threads``, :func:`helpers` gives none and callers use
  threads (:mod:`xpnet.work`).
* A helper is a fresh interpreter (``sys.executable``), never a fork of the
  caller (forking a process with threads may deadlock; a fresh interpreter
  inherits nothing of the caller's state). It is started in the background the
  first time helpers are asked for and used once it has imported xpnet; until
  then callers use threads. Helpers are kept for the process's life and told to
  stop at exit or by :func:`stop` (they also stop when their pipe closes).
* Arrays travel through shared memory (:mod:`xpnet.shm`: one ``memfd`` per
  helper and one shared by all, mapped by both sides), never through the
  pipe. What a helper returns is copied out before the next call reuses the
  memory. A helper keeps the arguments common to a call's parts while the same
  pickle comes again (their arrays view the shared memory, which holds the new
  values): a function run in helpers never changes its arguments.
* A helper runs only functions of xpnet named ``"module:function"``, with BLAS at
  one thread and ``$XPNET_NUM_THREADS=1`` (no helpers of its own), SIGINT
  ignored (a Ctrl-C is the caller's). A helper that fails or dies is dropped and
  its task computed again in the caller, which raises the error if it is one.
* One caller at a time: a second caller (another thread) meanwhile gets no
  helpers. A call interrupted in the caller (Ctrl-C) drops every helper in use.
* A **team** (:func:`team`) is the caller and one helper on one piece of work,
  messages going both ways until the helper's end (:mod:`xpnet.team`); its
  shared loops' arrays lie in a third memory, shared by all helpers. A helper
  whose team broke or did not end is dropped.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import subprocess
import sys
import threading

from .shm import (
    FIRST_BYTES,
    Memory,
    copied,
    function_name,
    named_function,
    read_message,
    write_message,
)
from .team import Link
from .team import serve as serve_team

__all__ = ["PARALLEL_VARIABLE", "helpers", "run", "stop", "team"]

#: Environment variable: ``threads`` keeps host work on threads (no helper processes).
PARALLEL_VARIABLE = "XPNET_PARALLEL"

_MAX_FAILURES = 3


class _Helper:
    """One helper process, its pipes and its shared memory."""

    def __init__(self, shared: Memory, loops: Memory):
        self.memory = Memory.create("xpnet-helper")
        to_read, self.to_write = os.pipe()
        self.from_read, from_write = os.pipe()
        env = dict(os.environ)
        env.update(
            {
                "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "XPNET_NUM_THREADS": "1",
                PARALLEL_VARIABLE: "threads",
            }
        )
        fds = (to_read, from_write, shared.fd, self.memory.fd, loops.fd)
        # sys.path[0] is the working directory under -c: the caller's xpnet instead
        code = (
            "import sys; sys.path[0] = sys.argv[1]; "
            "from xpnet.procs import _serve; _serve(*map(int, sys.argv[2:]))"
        )
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, _PACKAGE_ROOT, *map(str, fds)],
                pass_fds=fds,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # a helper prints nothing; its errors go to stderr
                start_new_session=True,  # a Ctrl-C in the terminal is the caller's
            )
        except BaseException:
            for fd in (self.to_write, self.from_read, self.memory.fd):
                os.close(fd)
            raise
        finally:
            os.close(to_read)
            os.close(from_write)
        self.reader = os.fdopen(self.from_read, "rb")
        self.writer = os.fdopen(self.to_write, "wb")
        self.ready = self.started = False
        self.alive = True

    def poll_ready(self) -> bool:
        """Whether the helper has started (without waiting)."""
        if not self.ready and self.alive:
            readable, _, _ = select.select([self.reader], [], [], 0)
            if readable:
                if self.reader.read(1) == b"R":
                    self.ready = self.started = True
                else:  # it ended before it was ready
                    self.stop(kill=True)
        return self.ready

    def stop(self, kill: bool = False):
        self.alive = self.ready = False
        for stream in (self.writer, self.reader):
            with contextlib.suppress(OSError):
                stream.close()
        if kill:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=2)
            return
        self.process.kill()
        self.process.wait()

    def forget(self):
        """In a forked child: close this copy of the pipes, touch nothing else."""
        for fd in (self.to_write, self.from_read, self.memory.fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Pool:
    """The kept helpers (started on demand), and the memory they all share."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.shared: Memory | None = None
        self.loops: Memory | None = None  # a team's shared loops' (xpnet.team)
        self.helpers: list[_Helper] = []
        self.failures = 0  # helpers that ended before they were ready

    def start(self, count: int):
        """Start helpers up to ``count`` (in the background). Where helpers cannot
        start (no interpreter to run, or three of them ended before they were
        ready), none is started again in this process."""
        self.drop_ended()
        if self.failures >= _MAX_FAILURES:
            return
        try:
            if self.shared is None:
                self.shared = Memory.create("xpnet-shared")
            if self.loops is None:
                self.loops = Memory.create("xpnet-team")
            while len(self.helpers) < count:
                self.helpers.append(_Helper(self.shared, self.loops))
        except (OSError, ValueError, subprocess.SubprocessError):
            self.failures = _MAX_FAILURES

    def ready(self, count: int) -> list[_Helper]:
        self.start(count)
        ready = [h for h in self.helpers if h.poll_ready()]
        self.drop_ended()
        return ready[:count]

    def drop_ended(self):
        self.failures += sum(not (h.alive or h.started) for h in self.helpers)
        self.helpers = [h for h in self.helpers if h.alive]

    def stop(self):
        for helper in self.helpers:
            helper.stop(kill=not helper.ready)  # one still starting has nothing to finish
        self.helpers = []

    def forked(self):
        for helper in self.helpers:
            helper.forget()
        for memory in (self.shared, self.loops):
            if memory is not None:
                with contextlib.suppress(OSError):
                    os.close(memory.fd)
        self.__init__()


_POOL = _Pool()
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
atexit.register(_POOL.stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.forked)


def enabled() -> bool:
    """Whether helper processes may be used here (Linux, not turned off)."""
    setting = os.environ.get(PARALLEL_VARIABLE, "").strip().lower()
    if setting not in ("", "processes", "threads"):
        raise ValueError(f"${PARALLEL_VARIABLE} must be 'processes' or 'threads', got {setting!r}")
    return setting != "threads" and hasattr(os, "memfd_create") and sys.platform == "linux"


def helpers(count: int, *, wait: bool = False) -> int:
    """How many helper processes are ready now, starting the missing ones.

    Parameters
    ----------
    count : int
        Helpers wanted (a gradient on ``n`` cores asks for ``n - 1``).
    wait : bool
        Wait until they are ready (benchmarks); else return at once.

    Returns
    -------
    int
        Ready helpers, at most ``count``; 0 where helpers are not used
        (``$XPNET_PARALLEL=threads``, not Linux) and, unless ``wait``, while
        another caller is using them (a second caller runs on threads rather
        than wait for the first's work).

    Raises
    ------
    ValueError
        ``$XPNET_PARALLEL`` is neither ``processes`` nor ``threads``.
    """
    if count <= 0 or not enabled():
        return 0
    if not _POOL.lock.acquire(blocking=wait):
        return 0
    try:
        ready = _POOL.ready(count)
        while wait and len(ready) < count:
            waiting = [h.reader for h in _POOL.helpers if h.alive and not h.ready]
            if not waiting:
                break
            select.select(waiting, [], [], 30)
            ready = _POOL.ready(count)
        return len(ready)
    finally:
        _POOL.lock.release()


def stop() -> None:
    """Stop every helper now (their memory back); the next gradient that asks
    for helpers starts them again. Waits for a caller using them to finish."""
    with _POOL.lock:
        _POOL.stop()


@contextlib.contextmanager
def team():
    """The caller's :class:`xpnet.team.Link` to one ready helper process, or None
    (none ready, another caller using them, helpers not used here). A helper
    whose team broke or did not finish (the caller raised) is dropped.

    Yields
    ------
    Link or None
    """
    link = helper = None
    locked = enabled() and _POOL.lock.acquire(blocking=False)
    try:
        ready = _POOL.ready(1) if locked else []
        if ready and _POOL.shared is not None and _POOL.loops is not None:
            helper = ready[0]
            link = Link(
                True, helper.reader, helper.writer, _POOL.shared, helper.memory, _POOL.loops
            )
        try:
            yield link
        finally:
            if helper is not None and link is not None and (link.broken or not link.finished):
                helper.stop(kill=True)
    finally:
        if locked:
            _POOL.lock.release()


def run(function, common, parts, count, *, views=False):
    """``function(*common, *part)`` for each of ``parts``, yielded in order, round
    by round: in each round the first part in this process, the next ones in up
    to ``count`` ready helpers at the same time (one part each).

    Parameters
    ----------
    function : callable
        A module-level function of xpnet (found by name in the helpers).
    common : tuple
        Arguments shared by every part (sent once per call); picklable, arrays
        NumPy; ``function`` must not change them (a helper keeps them).
    parts : list of tuple
        Each part's own arguments.
    count : int
        The most helpers to use.
    views : bool
        A helper's result as it lies in its shared memory (no copy): valid only
        until the next result is asked for, for a caller that reads each at
        once (the next round's hand-off writes over it). The first result of
        every round is this process's own either way.

    Yields
    ------
    object
        The results, in the order of ``parts`` (a round's results are held until
        the round ends, no longer). Parts no helper takes (none ready, another
        caller using them, a helper that failed) are computed here.
    """
    name = function_name(function)
    if len(parts) > 1 and count > 0 and enabled() and _POOL.lock.acquire(blocking=False):
        try:
            yield from _remote(name, function, common, parts, min(count, len(parts) - 1), views)
        finally:
            _POOL.lock.release()
    else:
        for part in parts:
            yield function(*common, *part)


_FAILED = object()  # a part whose helper failed: computed again here


def _remote(name, function, common, parts, count, views):
    ready = _POOL.ready(count)
    shared, common_message = _POOL.shared, None
    if ready and shared is not None:
        common_message = ("run", name, shared.size, *shared.put(common)[:2])
    index = 0
    while index < len(parts):
        sent = [
            (helper, _send(helper, common_message, parts[k]))
            for helper, k in zip(ready, range(index + 1, len(parts)), strict=False)
        ]
        try:
            local = function(*common, *parts[index])
        except Exception:
            for helper, ok in sent:  # the helpers' replies are read (and dropped) first
                if ok:
                    _receive(helper)
            raise
        except BaseException:  # interrupted: replies would be read by the next call
            for helper, _ in sent:
                helper.stop(kill=True)
            raise
        replies = [_receive(helper, views) if ok else _FAILED for helper, ok in sent]
        yield local
        for k, reply in enumerate(replies, start=index + 1):
            yield function(*common, *parts[k]) if reply is _FAILED else reply
        index += 1 + len(sent)
        ready = [h for h in ready if h.alive]


def _send(helper, common_message, part) -> bool:
    """Whether ``part`` went to ``helper`` (a helper that cannot take it is dropped)."""
    data, places, end = helper.memory.put(part)
    try:
        write_message(helper.writer, (*common_message, helper.memory.size, data, places, end))
        return True
    except OSError:
        helper.stop(kill=True)
        return False


def _receive(helper, views=False):
    """The helper's result (copied out of its memory unless ``views``), or
    _FAILED (it is dropped)."""
    try:
        status, *reply = read_message(helper.reader)
    except (OSError, EOFError):
        status = "ended"
    if status != "ok":  # computed again here (which raises the error, if it is one)
        helper.stop(kill=True)
        return _FAILED
    size, data, places = reply
    helper.memory.remap(size)
    result = helper.memory.get(data, places)
    return result if views else copied(result)


def _serve(to_read: int, from_write: int, *memory_fds: int):  # pragma: no cover
    """A helper's loop (in the helper process): run what the caller sends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # unbuffered: no unsent reply left to print a broken pipe when the helper exits
    reader, writer = os.fdopen(to_read, "rb"), os.fdopen(from_write, "wb", buffering=0)
    import xpnet.structured  # noqa: F401  (what helpers run, loaded before "ready")
    from xpnet.device import tune_host_allocator

    tune_host_allocator()  # as in the caller: freed blocks kept for reuse
    # the memory shared by all helpers, this helper's own, a team's loops'
    shared, own, loops = (Memory(fd, FIRST_BYTES) for fd in memory_fds)
    try:
        writer.write(b"R")
        while True:
            message = read_message(reader)
            if message[0] == "team":
                serve_team(message, reader, writer, shared, own, loops)
            else:
                _serve_one(message, shared, own, writer)
    except (BrokenPipeError, EOFError):  # the caller closed the pipe or is gone
        return


def _serve_one(message, shared: Memory, own: Memory, writer):  # pragma: no cover
    """Run one message's function in a helper and write the reply."""
    _kind, name, shared_size, common_data, common_places, *own_message = message
    own_size, data, places, end = own_message
    result = None
    reply: tuple
    try:
        function = named_function(name)
        shared.remap(shared_size)
        own.remap(own_size)
        result = function(*shared.get_kept(common_data, common_places), *own.get(data, places))
        data, places, _ = own.put(result, start=end)
        reply = ("ok", own.size, data, places)
    except Exception as exc:  # the caller computes it again and reports
        reply = ("error", f"{type(exc).__name__}: {exc}")
    del result
    write_message(writer, reply)
