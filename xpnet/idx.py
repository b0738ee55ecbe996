"""Reader for the IDX files of MNIST and Fashion-MNIST (gzip or raw).

Rules of this module:

* The header is validated before any data is used: two zero bytes, a known type
  code, a dimension count, then the big-endian dimensions; the payload must be
  exactly as long as the dimensions say. A truncated, padded or corrupt file
  raises :class:`IdxError` naming the file; nothing is ever silently reshaped.
* Host only: returns NumPy arrays.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np  # host

__all__ = ["IdxError", "read_idx", "parse_idx", "encode_idx"]

# type code -> big-endian NumPy dtype
_TYPES = {
    0x08: np.dtype(">u1"),  # host
    0x09: np.dtype(">i1"),  # host
    0x0B: np.dtype(">i2"),  # host
    0x0C: np.dtype(">i4"),  # host
    0x0D: np.dtype(">f4"),  # host
    0x0E: np.dtype(">f8"),  # host
}


class IdxError(ValueError):
    """An IDX file is malformed (bad magic, dimensions or length)."""


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:  # host
    """Parse the bytes of an (uncompressed) IDX file into an array."""
    if len(data) < 4:
        raise IdxError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _TYPES:
        raise IdxError(f"{name}: bad IDX magic number {data[:4].hex()} (not an IDX file?)")
    if ndim == 0:
        raise IdxError(f"{name}: IDX file declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{name}: truncated header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize  # host
    actual = len(data) - header
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise IdxError(f"{name}: {kind}: shape {shape} needs {expected} data bytes, found {actual}")
    return (
        np.frombuffer(data, dtype=dtype, offset=header)  # host
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def read_idx(path) -> np.ndarray:  # host
    """Read an IDX file, gzip-compressed (``.gz``, detected by content) or raw."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxError(f"{path}: corrupt gzip data ({exc})") from exc
    return parse_idx(data, str(path))


def encode_idx(array: np.ndarray) -> bytes:  # host
    """The IDX bytes of ``array`` (uint8/int8/int16/int32/float32/float64)."""
    array = np.asarray(array)  # host
    for code, dtype in _TYPES.items():
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            header = struct.pack(">HBB", 0, code, array.ndim)
            header += struct.pack(f">{array.ndim}I", *array.shape)
            return header + array.astype(dtype).tobytes()
    raise TypeError(f"IDX has no type for dtype {array.dtype}")
