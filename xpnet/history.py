"""A training run's history, and the files a run leaves in its directory.

Rules of this module:

* :class:`History` is a ``TypedDict``: typed for readers and checkers, a plain
  dict of JSON values at run time (``json.dumps(history)`` works; it holds no
  network and no array).
* :func:`write_outputs` writes what every run with a directory leaves there,
  whether it was started from the API or the command line: ``params.npz``,
  ``history.json``, ``loss.png`` and, for heads with an accuracy,
  ``accuracy.png`` (the checkpoint is the training loop's). Every file is
  written atomically.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TypedDict

from .io import save_json

__all__ = ["History", "new_history", "write_outputs"]


class History(TypedDict):
    """What a run measured. Lists are per iteration (``loss``) or per evaluation
    (the rest); accuracies are empty for the identity head."""

    config: dict  # the resolved TrainConfig, as a dict
    loss: list  # the minibatch's loss after each update
    train_acc: list
    test_acc: list
    train_loss: list  # whole-set losses, per evaluation
    test_loss: list
    eval_iters: list  # the iteration of each evaluation
    initial_loss: float | None  # the whole training set's loss before training
    wall_time: float  # seconds
    iters_done: int
    time_per_iter: float  # seconds


def new_history(config) -> History:
    """The history of a run that has not started (``config``: a resolved
    :class:`xpnet.TrainConfig`)."""
    return History(
        config=asdict(config),
        loss=[],
        train_acc=[],
        test_acc=[],
        train_loss=[],
        test_loss=[],
        eval_iters=[],
        initial_loss=None,
        wall_time=0.0,
        iters_done=0,
        time_per_iter=0.0,
    )


def write_outputs(out, net, history: History) -> list[str]:
    """Write a finished run's files into ``out``; return their names (with the
    checkpoint, which the loop wrote), in the order the CLI lists them."""
    from .plots import save_accuracy_plot, save_loss_plot

    out = Path(out)
    net.save(out / "params.npz")
    save_json(out / "history.json", dict(history))
    save_loss_plot(dict(history), out / "loss.png")
    written = ["history.json", "loss.png", "params.npz", "checkpoint.npz"]
    if history["train_acc"]:
        save_accuracy_plot(dict(history), out / "accuracy.png")
        written.insert(1, "accuracy.png")
    return written
