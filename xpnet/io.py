"""Host-side file writing: atomic writes, ``.npz`` without pickle, JSON.

Rules of this module:

* A file the user keeps is never left half-written: data goes to a temporary file
  in the same directory, is flushed to disk, then renamed over the target (an
  atomic replace on POSIX and Windows).
* Arrays are saved as plain ``.npz`` and loaded with ``allow_pickle=False``.
* Everything here is host data (NumPy arrays, Python objects).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np  # host

__all__ = ["atomic_write_bytes", "save_npz", "load_npz", "save_json"]


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a saved file follows the umask
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_npz(path, arrays: dict) -> Path:
    """Save a dict of host arrays (and scalars) as ``.npz``, atomically."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})  # host
    return atomic_write_bytes(path, buffer.getvalue())


def load_npz(path) -> dict:
    """Load an ``.npz`` written by :func:`save_npz` (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with np.load(path, allow_pickle=False) as data:  # host
        return {k: data[k] for k in data.files}


def save_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())
