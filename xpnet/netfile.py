"""Network files: a network's spec and parameters in one ``.npz``.

Rules of this module:

* A file holds ``sizes``, ``activation``, ``output``, ``weight_decay_lambda`` and
  the book's ``W1 b1 ... WL bL`` as plain arrays (no pickle); it is written
  atomically by :func:`xpnet.io.save_npz`.
* A file is checked from its headers before any weight is read: the spec must be
  valid and every parameter must have the shape the sizes give, in floats.
  Anything else is one ``ValueError`` naming the file.
"""

from __future__ import annotations

import math

import numpy as np  # host: files are host arrays

from . import model
from .functions import ACTIVATIONS
from .heads import HEADS
from .io import load_npz, npz_shapes

__all__ = ["network_arrays", "read_network_file"]


def network_arrays(spec: model.ModelSpec, params: dict) -> dict:
    """What a network file holds: ``params`` (host arrays) and the spec."""
    arrays = dict(params)
    arrays.update(
        {
            "sizes": np.asarray(spec.sizes),  # host
            "activation": np.asarray(spec.activation),  # host
            "output": np.asarray(spec.output),  # host
            "weight_decay_lambda": np.asarray(spec.weight_decay),  # host
        }
    )
    return arrays


def read_network_file(path, max_bytes: int | None = None) -> tuple[dict, model.ModelSpec]:
    """Stored parameters and spec of a network file, checked against each other
    from the headers before any weight is read."""
    shapes = npz_shapes(path)
    missing = {"sizes", "activation"} - set(shapes)
    if missing:
        raise ValueError(f"{path} is not an xpnet network file (missing {sorted(missing)})")
    sizes_shape, sizes_dtype = shapes["sizes"]
    if len(sizes_shape) != 1 or not 2 <= sizes_shape[0] <= 1000 or sizes_dtype.kind not in "iu":
        raise ValueError(
            f"{path}: 'sizes' must be 2 or more integer layer sizes, got shape "
            f"{sizes_shape} of {sizes_dtype}"
        )
    config_keys = ("sizes", "activation", "output", "weight_decay_lambda")
    small = load_npz(path, keys=config_keys)
    sizes = tuple(int(v) for v in small["sizes"])
    if min(sizes) <= 0:
        raise ValueError(f"{path}: 'sizes' must be positive, got {sizes}")
    expected = model.ModelSpec(sizes).param_shapes()
    for name, shape in expected.items():
        if name not in shapes:
            raise ValueError(f"{path} is not an xpnet network file (missing {name!r})")
        stored, dtype = shapes[name]
        if stored != shape or dtype.kind != "f":
            raise ValueError(
                f"{path}: {name} is stored with shape {stored} ({dtype}) but 'sizes' "
                f"{sizes} needs {shape} floats: not an xpnet file or damaged"
            )
    for key in ("activation", "output", "weight_decay_lambda"):
        if key in small and small[key].shape != ():
            raise ValueError(f"{path}: {key!r} must be a single value")
    activation = str(small["activation"])
    output = str(small["output"]) if "output" in small else "softmax"
    for key, value, known in (("activation", activation, ACTIVATIONS), ("output", output, HEADS)):
        if value not in known:
            raise ValueError(f"{path}: unknown {key} {value!r}")
    decay = float(small.get("weight_decay_lambda", 0.0))
    if not (math.isfinite(decay) and decay >= 0):
        raise ValueError(f"{path}: 'weight_decay_lambda' must be a finite float >= 0, got {decay}")
    spec = model.ModelSpec(sizes, activation, output, decay)
    return load_npz(path, keys=set(expected), max_bytes=max_bytes), spec
