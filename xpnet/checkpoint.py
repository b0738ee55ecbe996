"""A training run's checkpoint: everything needed to continue it exactly.

Rules of this module:

* One file, ``checkpoint.npz`` in the run directory, written atomically
  (:func:`xpnet.io.save_npz`, no pickle): the parameters (``param/W1`` ...), the
  optimizer's state (``opt/...``) and, as one JSON string, the history so far
  and the minibatch RNG's state.
* Loading checks that the run's settings are those the checkpoint was written
  with (a resumed run must reach what an uninterrupted one reaches): any
  difference is one ``ValueError`` naming the settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np  # host: the file holds host arrays

from .backend import to_numpy
from .io import load_npz, save_npz

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
        of :data:`SETTINGS`."""
        data = load_npz(self.path)
        meta = json.loads(str(data["meta"]))
        saved = meta["history"]["config"]
        changed = [k for k in SETTINGS if saved.get(k) != getattr(config, k)]
        if changed:
            raise ValueError(
                f"--resume: {self.path} was written with different settings "
                f"({', '.join(changed)}); use the same settings or another --out"
            )
        net.params = {
            k: net.backend.from_host(data[f"param/{k}"], dtype=net.dtype) for k in net.params
        }
        state = {k[4:]: v for k, v in data.items() if k.startswith("opt/")}
        optimizer.load_state_dict(state, net.backend)
        rng.bit_generator.state = meta["rng"]
        return meta["history"]
