"""Host-side file writing: atomic writes, ``.npz`` without pickle, JSON.

Rules of this module:

* A file the user keeps is never left half-written: data goes to a temporary file
  in the same directory, is flushed to disk, then renamed over the target (an
  atomic replace on POSIX and Windows).
* The rename replaces a symbolic link at the target *itself*: a link planted in
  an output directory is never followed out of it. The temporary file is created
  with mode 0666 and ``O_EXCL``, so the kernel applies the umask (the process's
  umask is never changed) and nothing is written through an existing name.
* Arrays are saved as plain ``.npz`` and loaded with ``allow_pickle=False``; a
  file that is not one (corrupt, truncated, empty, text, pickled objects) raises
  :class:`DamagedFileError` naming the file. :func:`npz_shapes` reads only the
  array headers, so a file's claims can be checked before its data is read.
* Everything here is host data (NumPy arrays, Python objects).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np  # host

__all__ = [
    "atomic_write_bytes",
    "save_npz",
    "load_npz",
    "npz_shapes",
    "save_json",
    "remove_stale_temporaries",
    "DamagedFileError",
    "TEMP_SUFFIX",
    "MAX_NPZ_BYTES",
]

#: Largest total of array bytes :func:`load_npz` reads unless told otherwise.
MAX_NPZ_BYTES = 2**31
# everything a damaged zip or .npy can raise on the way in: one DamagedFileError
_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,  # a zip feature (version, compression) the reader lacks
    RuntimeError,  # a member flagged as encrypted (found by the property tests)
    tokenize.TokenError,  # a damaged .npy header, as NumPy parses it (found the same way)
    SyntaxError,
    ValueError,
    OSError,
    EOFError,
    KeyError,
    OverflowError,
    MemoryError,
)

#: Suffix of the temporary files of :func:`atomic_write_bytes` (``.NAME.RANDOM.tmp``).
TEMP_SUFFIX = ".xpnet-tmp"


class DamagedFileError(ValueError):
    """A file that should hold xpnet arrays is not a readable ``.npz``."""


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    # O_EXCL: a fresh file, never an existing name or link; mode 0666 & ~umask
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_stale_temporaries(directory) -> list[Path]:
    """Delete temporary files that an interrupted :func:`atomic_write_bytes` left."""
    removed = []
    for tmp in Path(directory).glob(f".*{TEMP_SUFFIX}"):
        if tmp.is_file() or tmp.is_symlink():
            tmp.unlink()
            removed.append(tmp)
    return removed


def _damaged(path, reason) -> DamagedFileError:
    return DamagedFileError(f"{path} is not an xpnet file or is damaged ({reason})")


def npz_shapes(path) -> dict:
    """``name -> (shape, dtype)`` of every array in an ``.npz``, from the headers
    only (nothing else is read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        shapes = {}
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(member)
                shapes[info.filename[:-4]] = (tuple(shape), dtype)
        return shapes
    except _READ_ERRORS as exc:
        raise _damaged(path, exc) from None


def save_npz(path, arrays: dict) -> Path:
    """Save a dict of host arrays (and scalars) as ``.npz``, atomically."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]  # host
    return atomic_write_bytes(path, buffer.getvalue())


def load_npz(path, keys=None, max_bytes: int | None = None) -> dict:
    """Load an ``.npz`` written by :func:`save_npz` (no pickle); only ``keys`` if
    given (the other members are not read, nor decompressed).

    The members' headers are read first (:func:`npz_shapes`): a member of object
    dtype (pickled) or members that together declare more than ``max_bytes``
    (default :data:`MAX_NPZ_BYTES`) are refused before any data is read.

    Raises
    ------
    FileNotFoundError
        No such file.
    DamagedFileError
        Anything else that keeps it from being read as plain arrays, or too large.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            raise _damaged(path, "not an .npz (zip) archive")
    shapes = npz_shapes(path)
    wanted = [k for k in shapes if keys is None or k in keys]
    limit = MAX_NPZ_BYTES if max_bytes is None else max_bytes
    declared = 0
    for k in wanted:
        shape, dtype = shapes[k]
        if dtype.hasobject:
            raise _damaged(path, f"{k!r} holds pickled objects")
        declared += math.prod(shape) * dtype.itemsize
    if declared > limit:
        raise _damaged(path, f"its arrays declare {declared} bytes, more than the {limit} allowed")
    try:
        # our own handle: np.load leaks its file when the archive is damaged
        with open(path, "rb") as handle:
            data = np.load(handle, allow_pickle=False)  # host
            if not hasattr(data, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            with data:
                return {k: data[k] for k in wanted}
    except _READ_ERRORS as exc:
        reason = "it holds pickled objects" if "pickle" in str(exc) else exc
        raise _damaged(path, reason) from None


def save_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())
