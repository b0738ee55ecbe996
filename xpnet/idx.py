"""Reader for the IDX files of MNIST and Fashion-MNIST (gzip or raw).

Rules of this module:

* The header is validated before any data is read: two zero bytes, a known type
  code, at most :data:`MAX_DIMENSIONS` dimensions, then the big-endian
  dimensions, whose product (in Python integers: no overflow) must fit
  ``max_bytes``. Then exactly the declared payload is read, plus one byte to
  detect trailing data: a compressed file is decompressed only that far, so a
  small ``.gz`` that expands to gigabytes costs nothing. A truncated, padded,
  oversized or corrupt file raises :class:`IdxError` naming the file; nothing is
  ever silently reshaped.
* Host only: returns NumPy arrays.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np  # host

__all__ = ["IdxError", "read_idx", "parse_idx", "encode_idx", "MAX_IDX_BYTES", "MAX_DIMENSIONS"]

#: Largest payload an IDX file may declare by default (MNIST's largest: 47 MB).
MAX_IDX_BYTES = 2**30
#: Most dimensions an IDX file may declare (MNIST's images have 3).
MAX_DIMENSIONS = 4

# type code -> big-endian NumPy dtype
_TYPES: dict[int, np.dtype] = {  # host
    0x08: np.dtype(">u1"),  # host
    0x09: np.dtype(">i1"),  # host
    0x0B: np.dtype(">i2"),  # host
    0x0C: np.dtype(">i4"),  # host
    0x0D: np.dtype(">f4"),  # host
    0x0E: np.dtype(">f8"),  # host
}


class IdxError(ValueError):
    """An IDX file is malformed (bad magic, dimensions or length)."""


def _header(read, name: str, max_bytes: int):  # host
    """``(shape, dtype, payload bytes)`` from the header that ``read(n)`` yields."""
    head = read(4)
    if len(head) < 4:
        raise IdxError(f"{name}: too short for an IDX header ({len(head)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", head)
    if zero != 0 or type_code not in _TYPES:
        raise IdxError(f"{name}: bad IDX magic number {head.hex()} (not an IDX file?)")
    if not 1 <= ndim <= MAX_DIMENSIONS:
        raise IdxError(f"{name}: IDX file declares {ndim} dimensions (1 to {MAX_DIMENSIONS})")
    dims = read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise IdxError(f"{name}: truncated header ({4 + len(dims)} of {4 + 4 * ndim} bytes)")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = _TYPES[type_code]
    payload = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if payload > max_bytes:
        raise IdxError(
            f"{name}: declares shape {shape}, {payload} bytes: more than the {max_bytes} "
            "bytes allowed (max_bytes)"
        )
    return shape, dtype, payload


def _array(data: bytes, shape, dtype, payload: int, extra: int, name: str):  # host
    if len(data) != payload or extra:
        kind = "truncated" if len(data) < payload else "has trailing bytes"
        found = f"{len(data)}" if len(data) < payload else "more"
        raise IdxError(f"{name}: {kind}: shape {shape} needs {payload} data bytes, found {found}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))  # host


def parse_idx(
    data: bytes, name: str = "<bytes>", max_bytes: int = MAX_IDX_BYTES
) -> np.ndarray:  # host
    """Parse the bytes of an (uncompressed) IDX file into an array (host)."""
    stream = io.BytesIO(data)
    shape, dtype, payload = _header(stream.read, name, max_bytes)
    body = stream.read(payload)
    return _array(body, shape, dtype, payload, len(stream.read(1)), name)


def read_idx(path, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:  # host
    """Read an IDX file, gzip-compressed (detected by content) or raw, reading
    (and decompressing) no more than its header declares plus one byte."""
    path = Path(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        handle = gzip.GzipFile(fileobj=raw) if compressed else raw
        try:
            shape, dtype, payload = _header(handle.read, str(path), max_bytes)
            body = handle.read(payload)
            extra = len(handle.read(1))
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxError(f"{path}: corrupt gzip data ({exc})") from exc
    return _array(body, shape, dtype, payload, extra, str(path))


def encode_idx(array: np.ndarray) -> bytes:  # host
    """The IDX bytes of ``array`` (uint8/int8/int16/int32/float32/float64)."""
    array = np.asarray(array)  # host
    for code, dtype in _TYPES.items():
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            header = struct.pack(">HBB", 0, code, array.ndim)
            header += struct.pack(f">{array.ndim}I", *array.shape)
            return header + array.astype(dtype).tobytes()
    raise TypeError(f"IDX has no type for dtype {array.dtype}")
