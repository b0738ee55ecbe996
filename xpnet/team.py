"""Two processes on one piece of work: the caller and one helper process, each
holding a :class:`Link` to the other (made by :func:`xpnet.procs.team`).

Rules of this module:

* Between messages both sides run the same code on the same values (what one
  side computes outside a shared loop, the other computes too). A side's
  objects travel as :mod:`xpnet.shm` puts them: the caller's in the pool's
  shared memory, the helper's in its own, each after the last one sent in the
  same team (what was sent stays valid for the whole team); only the pickle
  and the buffers' places go through the pipe.
* A shared loop (:meth:`Link.pieces`) computes planned pieces ``(lo, hi)`` of a
  range into one array of the **team memory** (a third ``memfd``, mapped by
  both), at the place that the loops before it leave, the same on both sides.
  The caller takes pieces from the front, the helper from the back, each
  writing its next claim in the loop's header before computing the piece
  (each header word is written by one side only, one aligned 8-byte store);
  a side stops where the other's claim begins. A claim seen late only makes
  both compute a piece, with the same arithmetic into the same place; no
  piece is left out. Then each side tells the other it is done, through the
  pipe (a barrier both ways: what a side wrote before it, the other reads
  after it), and both go on with the whole array.
* Any fault of the helper (an error, the pipe closed, a reply out of turn)
  **breaks** the team: the caller computes what is left alone (a loop's pieces
  from its front on, the helper's claimed ones included) and never waits for
  the helper again; :func:`xpnet.procs.team` then drops the helper. A fault in
  the helper's own code ends its side of the team.
"""

from __future__ import annotations

import os
from collections import deque

import numpy as np  # host: the team memory's headers and arrays are NumPy's

from .shm import Memory, function_name, named_function, read_message, write_message

__all__ = ["Link", "TeamBroken", "MAX_LOOPS"]

#: Shared loops of one team (their headers sit at the start of the team memory);
#: later loops run whole on both sides.
MAX_LOOPS = 64
_UNCLAIMED = np.iinfo(np.int64).max  # host: the helper's header before its first claim
_FIRST_OUTPUT = MAX_LOOPS * 2 * 8  # bytes of the headers
_ALIGN = 64
_GROWTH = 1 << 22  # the team memory grows in steps of 4 MiB (the same on both sides)


class TeamBroken(Exception):
    """The other side of a team failed, ended or replied out of turn."""


def _grown(memory: Memory, end: int):
    """Map at least ``end`` bytes of ``memory``, growing the file to the next
    4 MiB where it is smaller (both sides may grow it for the same loop: they
    ask for the same size; never shrunk)."""
    if end <= memory.size:
        return
    size = os.fstat(memory.fd).st_size
    if size < end:
        size = -(-end // _GROWTH) * _GROWTH
        os.ftruncate(memory.fd, size)
    memory.remap(max(size, end))


def _consecutive(bounds) -> bool:
    """Whether ``bounds`` cover ``range(0, stop)`` piece after piece."""
    starts = [lo for lo, _ in bounds]
    return starts[0] == 0 and starts[1:] == [hi for _, hi in bounds[:-1]]


class Link:
    """One side's end of a team: messages to the other side, shared loops."""

    def __init__(self, caller: bool, reader, writer, out: Memory, into: Memory, loops: Memory):
        self.caller = caller
        self.reader, self.writer = reader, writer
        self.out, self.into, self.loops = out, into, loops  # sent, received, the loops'
        self.sent_end = 0  # where the next object this side sends goes in ``out``
        self.loop = 0  # the next shared loop
        self.output_end = _FIRST_OUTPUT  # where the next loop's array goes
        self.broken = False
        self.finished = False
        self.waiting: deque = deque()  # objects that came while a loop's end was awaited

    # -- messages ---------------------------------------------------------------
    def start(self, function, args: tuple):
        """(Caller) have the helper run ``function(link, *args)``: a module-level
        function of xpnet, as :func:`xpnet.procs.run` takes. The loops' headers
        are set first."""
        name = function_name(function)
        _grown(self.loops, _FIRST_OUTPUT)
        headers = self._headers()
        headers[:, 0] = 0
        headers[:, 1] = _UNCLAIMED
        data, places, self.sent_end = self.out.put(args)
        self._write(("team", name, self.out.size, data, places))

    def send(self, obj):
        """Send ``obj`` to the other side (its arrays in this side's memory)."""
        self._intact()
        data, places, self.sent_end = self.out.put(obj, start=self.sent_end)
        self._write(("object", self.out.size, data, places))

    def receive(self):
        """The next object the other side sent (its arrays view that side's memory)."""
        self._intact()
        _, size, data, places = self.waiting.popleft() if self.waiting else self._next("object")
        self.into.remap(size)
        return self.into.get(data, places)

    def finish(self):
        """(Caller) wait for the helper's end of the team."""
        if not self.broken:
            self._next("end")
        self.finished = True

    def _write(self, message):
        try:
            write_message(self.writer, message)
        except OSError as exc:
            raise self._broken(f"the pipe closed: {exc}") from exc

    def _read(self):
        try:
            message = read_message(self.reader)
        except (OSError, EOFError) as exc:
            raise self._broken(f"the pipe closed: {exc}") from exc
        if message[0] == "error":
            raise self._broken(f"the other side failed: {message[1]}")
        return message

    def _intact(self):
        if self.broken:
            raise TeamBroken("the team is broken")

    def _next(self, kind: str):
        """The next message of ``kind``; objects that come first wait for
        :meth:`receive` (the helper sends what it plans as it goes)."""
        while True:
            message = self._read()
            if message[0] == kind:
                return message
            if message[0] != "object":
                raise self._broken(f"expected {kind!r}, got {message[0]!r}")
            self.waiting.append(message)

    def _broken(self, why: str) -> TeamBroken:
        self.broken = True
        return TeamBroken(why)

    # -- shared loops -----------------------------------------------------------
    def _headers(self) -> np.ndarray:  # host
        return np.ndarray((MAX_LOOPS, 2), dtype=np.int64, buffer=self.loops.map)  # host

    def pieces(self, bounds, compute):
        """``compute(lo, hi)`` for each of ``bounds`` (consecutive, from 0),
        shared with the other side, joined along the first axis in the team
        memory; None where the loop is not shared (broken, one piece, past
        :data:`MAX_LOOPS`): the caller of this method computes it whole."""
        k = self.loop
        self.loop += 1
        if self.broken or len(bounds) <= 1 or k >= MAX_LOOPS or not _consecutive(bounds):
            return None
        out, done = None, 0
        if self.caller:
            out, done = self._front(k, bounds, compute)
        else:
            out = self._back(k, bounds, compute)
        try:
            self._write(("done", k, None if out is None else (out.shape, out.dtype.str)))
            _, loop, shape = self._next("done")
            if loop != k:
                raise self._broken(f"expected loop {k} done, got loop {loop}")
        except TeamBroken:
            if not self.caller:
                raise
            for lo, hi in bounds[done:]:  # the helper's claims too: alone now
                out = self._place(out, compute(lo, hi), lo, bounds[-1][1])
        else:
            if out is None:  # the other side computed every piece
                out = self._array(tuple(shape[0]), np.dtype(shape[1]))  # host
        self.output_end = -(-(self.output_end + out.nbytes) // _ALIGN) * _ALIGN
        return out

    def _front(self, k, bounds, compute):
        """The caller's claims, from the front: ``(out, pieces done)``."""
        headers = self._headers()
        out, front, count = None, 0, len(bounds)
        while True:
            back = int(headers[k, 1])
            if front >= (count if back == _UNCLAIMED else back):
                return out, front
            headers[k, 0] = front + 1
            lo, hi = bounds[front]
            out = self._place(out, compute(lo, hi), lo, bounds[-1][1])
            front += 1

    def _back(self, k, bounds, compute):
        """The helper's claims, from the back."""
        headers = self._headers()
        out, back = None, len(bounds)
        while back - 1 >= int(headers[k, 0]):
            back -= 1
            headers[k, 1] = back
            lo, hi = bounds[back]
            out = self._place(out, compute(lo, hi), lo, bounds[-1][1])
        return out

    def _place(self, out, piece, lo, total):
        if out is None:
            out = self._array((total, *piece.shape[1:]), piece.dtype)
        out[lo : lo + piece.shape[0]] = piece
        return out

    def _array(self, shape, dtype) -> np.ndarray:  # host
        """The current loop's array in the team memory (the same place on both sides)."""
        nbytes = int(np.prod(shape)) * dtype.itemsize  # host
        _grown(self.loops, self.output_end + nbytes)
        return np.ndarray(shape, dtype=dtype, buffer=self.loops.map, offset=self.output_end)  # host


def serve(  # pragma: no cover
    message: tuple, reader, writer, received: Memory, own: Memory, loops: Memory
) -> None:
    """Run a team's function in a helper (``message`` the caller's ``start``)."""
    _, name, size, data, places = message
    link = Link(False, reader, writer, own, received, loops)
    try:
        function = named_function(name)
        received.remap(size)
        # kept while the same pickle comes (the same shapes): its arrays hold what
        # the caller put this time, and unpickling took 0.16 ms of the helper's start
        function(link, *received.get_kept(data, places))
        reply: tuple = ("end",)
    except TeamBroken:
        return  # the caller is gone or has gone on alone
    except Exception as exc:  # the caller goes on alone
        reply = ("error", f"{type(exc).__name__}: {exc}")
    write_message(writer, reply)
