"""Shared memory and messages between a caller and its helper processes.

Rules of this module:

* A :class:`Memory` is a ``memfd`` file and one side's mapping of it, grown on
  demand by the side that writes (the other side remaps when told the new
  size); it never shrinks, so an old mapping stays valid for what it maps.
* Objects travel pickled (protocol 5) with their arrays' buffers out of band:
  the buffers are copied into the memory, each on a cache line of its own, and
  only the small pickle and the buffers' places go through the pipe. An
  object read back (:meth:`Memory.get`) views the memory: what must outlive
  the next write is copied out (:func:`copied`).
* A message on a pipe is an 8-byte length and a pickle; a pipe that ends
  early raises EOFError. A function travels by name, ``"module:function"``,
  and only a module-level function of xpnet (:func:`function_name`).
* Linux only (``os.memfd_create``); :mod:`xpnet.procs` checks before using it.
"""

from __future__ import annotations

import importlib
import mmap
import os
import pickle

__all__ = [
    "FIRST_BYTES",
    "Memory",
    "copied",
    "function_name",
    "named_function",
    "read_message",
    "write_message",
]

#: Bytes of a new memory (grown on demand).
FIRST_BYTES = 1 << 20
_ALIGN = 64  # bytes: every buffer starts on a cache line


class Memory:
    """A shared memory file (``memfd``) and this side's mapping of it."""

    def __init__(self, fd: int, size: int):
        self.fd = fd
        self.size = size
        self.map = mmap.mmap(fd, size)
        self.kept: tuple | None = None  # get_kept's last key and object

    @classmethod
    def create(cls, name: str) -> Memory:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(fd, FIRST_BYTES)
        return cls(fd, FIRST_BYTES)

    def remap(self, size: int):
        """Map ``size`` bytes (the file is at least that large)."""
        if size != self.size:
            # the old mapping stays open while arrays view it (it goes with them)
            self.map = mmap.mmap(self.fd, size)
            self.size = size

    def grow(self, size: int):
        if size > self.size:
            size = max(size, 2 * self.size)
            os.ftruncate(self.fd, size)
            self.remap(size)

    def put(self, obj, start: int = 0):
        """Pickle ``obj`` with its buffers placed from ``start``: ``(pickle,
        [(offset, length)], end)``."""
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        raws = [buffer.raw() for buffer in buffers]
        places, end = [], start
        for raw in raws:
            end = -(-end // _ALIGN) * _ALIGN
            places.append((end, raw.nbytes))
            end += raw.nbytes
        self.grow(end)
        view = memoryview(self.map)
        for raw, (offset, length) in zip(raws, places, strict=True):
            view[offset : offset + length] = raw
        return data, places, end

    def get(self, data: bytes, places):
        """The object of :meth:`put`, its arrays viewing this memory."""
        view = memoryview(self.map)
        return pickle.loads(data, buffers=[view[o : o + n] for o, n in places])

    def get_kept(self, data: bytes, places):
        """:meth:`get`, but the object of the last call again where the same
        pickle and places come at the same size: its arrays view this memory,
        so they hold what was put this time (whoever uses it must not change
        it). Why: unpickling a structured gradient's context took 0.1-0.2 ms
        with cold caches, before a helper's work could start."""
        key = (self.size, data, tuple(places))
        if self.kept is None or self.kept[0] != key:
            self.kept = (key, self.get(data, places))
        return self.kept[1]


def copied(obj):
    """``obj`` with every NumPy array in it copied (out of the shared memory)."""
    if isinstance(obj, list | tuple):
        return type(obj)(copied(item) for item in obj)
    copy = getattr(obj, "copy", None)
    return copy() if callable(copy) and hasattr(obj, "__array_interface__") else obj


def write_message(stream, message):
    data = pickle.dumps(message, protocol=5)
    view = memoryview(len(data).to_bytes(8, "little") + data)
    while view:  # an unbuffered stream may take part of it
        view = view[stream.write(view) :]
    stream.flush()


def read_message(stream):
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("the helper process ended")
    size = int.from_bytes(header, "little")
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the helper process ended")
    return pickle.loads(data)


def function_name(function) -> str:
    """``"module:function"`` of a module-level function of xpnet (what a helper
    may run); ValueError for any other."""
    name = f"{function.__module__}:{function.__qualname__}"
    if not name.startswith("xpnet.") or "." in function.__qualname__:
        raise ValueError(f"function must be a module-level function of xpnet, got {name}")
    return name


def named_function(name: str):
    """The function of :func:`function_name`'s ``name`` (imported where needed)."""
    module, _, qualname = name.partition(":")
    return getattr(importlib.import_module(module), qualname)
