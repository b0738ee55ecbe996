"""A training run's checkpoint: everything needed to continue it exactly.

Rules of this module:

* One file, ``checkpoint.npz`` in the run directory, written atomically
  (:func:`xpnet.io.save_npz`, no pickle): the parameters (``param/W1`` ...), the
  optimizer's state (``opt/...``) and, as one JSON string, the history so far
  and the minibatch RNG's state.
* Loading checks that the run's settings are those the checkpoint was written
  with (a resumed run must reach what an uninterrupted one reaches): any
  difference is one ``ValueError`` naming the settings.
* A checkpoint is validated as a whole before anything of it is used: the
  members it holds (from the headers: an unexpected member is refused, never
  read), every array's shape, dtype and finiteness against the network and the
  optimizer it claims, the history's fields and types, the RNG state. A failure
  is one ``ValueError`` naming the file and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np  # host: the file holds host arrays

from .backend import to_numpy
from .io import load_npz, npz_shapes, save_npz

__all__ = ["Checkpoint", "CHECKPOINT", "SETTINGS"]

CHECKPOINT = "checkpoint.npz"

#: settings a resumed run must share with its checkpoint
SETTINGS = (
    "dataset",
    "hidden",
    "activation",
    "output",
    "weight_decay",
    "optimizer",
    "lr",
    "batch_size",
    "seed",
    "grad",
    "dtype",
    "weight_init_std",
    # what the history records of the run: a resumed run must be the same run
    "method",
    "backend",
)


@dataclass(frozen=True)
class Checkpoint:
    """The checkpoint file of a run directory."""

    path: Path

    @classmethod
    def of(cls, directory) -> Checkpoint:
        return cls(Path(directory) / CHECKPOINT)

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, net, optimizer, rng, history: dict) -> None:
        """Write parameters, optimizer state, RNG state and ``history`` (atomic)."""
        arrays = {f"param/{k}": to_numpy(v) for k, v in net.params.items()}
        arrays.update({f"opt/{k}": v for k, v in optimizer.state_dict().items()})
        meta = {"history": history, "rng": rng.bit_generator.state}
        arrays["meta"] = np.asarray(json.dumps(meta))  # host
        save_npz(self.path, arrays)

    def load(self, net, optimizer, rng, config) -> dict:
        """Restore ``net``'s parameters, ``optimizer`` and ``rng`` in place from the
        file; return the history. Refused when ``config`` differs in a setting
        of :data:`SETTINGS`, or when anything in the file is not what this run
        needs."""
        expected = {f"param/{k}": tuple(v.shape) for k, v in net.params.items()}
        for slot in optimizer.slots:
            expected.update({f"opt/{slot}/{k}": tuple(v.shape) for k, v in net.params.items()})
        shapes = npz_shapes(self.path)
        stored, dtype = shapes.get("meta", (None, None))
        if stored != () or dtype.kind != "U":
            self._fail("meta", "must be one JSON string")
        meta = self._meta(load_npz(self.path, keys={"meta"})["meta"])
        saved = meta["history"]["config"]
        changed = [k for k in SETTINGS if saved.get(k) != getattr(config, k)]
        if changed:
            raise ValueError(
                f"--resume: {self.path} was written with different settings "
                f"({', '.join(changed)}); use the same settings or another --out"
            )
        self._check_members(shapes, expected)
        data = load_npz(self.path, keys={*expected, "opt/iter"})
        for key in expected:
            if not np.isfinite(data[key]).all():  # host
                self._fail(key, "holds NaN or inf")
        net.params = {
            k: net.backend.from_host(data[f"param/{k}"], dtype=net.dtype) for k in net.params
        }
        state = {k[4:]: v for k, v in data.items() if k.startswith("opt/")}
        optimizer.load_state_dict(state, net.backend)
        try:
            rng.bit_generator.state = meta["rng"]
        except (TypeError, ValueError, KeyError) as exc:
            self._fail("meta.rng", f"is not a generator state ({exc})")
        return meta["history"]

    def _fail(self, field: str, what: str):
        raise ValueError(f"--resume: {self.path} is damaged: {field} {what}")

    def _check_members(self, shapes: dict, expected: dict) -> None:
        allowed = {*expected, "meta", "opt/iter"}
        for name in shapes:
            if name not in allowed:
                self._fail(repr(name), "is not a member of a checkpoint of this run")
        for name in ("meta", "opt/iter", *expected):
            if name not in shapes:
                self._fail(repr(name), "is missing")
        for name, shape in expected.items():
            stored, dtype = shapes[name]
            if stored != shape or dtype.kind != "f":
                self._fail(name, f"has shape {stored} of {dtype}; this run needs {shape} floats")
        stored, dtype = shapes["opt/iter"]
        if stored != () or dtype.kind not in "iu":
            self._fail("opt/iter", f"must be one integer, got shape {stored} of {dtype}")

    def _meta(self, text) -> dict:
        try:
            meta = json.loads(str(text))
        except ValueError as exc:
            self._fail("meta", f"is not JSON ({exc})")
        if not isinstance(meta, dict) or not isinstance(meta.get("history"), dict):
            self._fail("meta", "must hold a history")
        history = meta["history"]
        for key, kind in _HISTORY.items():
            value = history.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                self._fail(f"history.{key}", f"must be {_names(kind)}, got {value!r}")
        done = history["iters_done"]
        if done < 0 or len(history["loss"]) != done:
            self._fail(
                "history.iters_done", f"is {done} with {len(history['loss'])} losses recorded"
            )
        evaluations = len(history["eval_iters"])
        for key in ("train_loss", "test_loss"):
            if len(history.get(key, [])) != evaluations:
                self._fail(f"history.{key}", f"has not one value per evaluation ({evaluations})")
        if not all(isinstance(v, (int, float)) for v in history["loss"]):
            self._fail("history.loss", "must hold numbers")
        return meta


def _names(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


#: the history fields a checkpoint must hold, and their types
_HISTORY: dict[str, type | tuple[type, ...]] = {
    "config": dict,
    "loss": list,
    "train_acc": list,
    "test_acc": list,
    "eval_iters": list,
    "iters_done": int,
    "wall_time": (int, float),
}
