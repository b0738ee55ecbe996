"""The book's training loop (``train_neuralnet.py``), on any backend.

Rules of this module:

* The network is a ``TwoLayerNet`` for the book's run (one hidden layer, softmax,
  no decay, a float init) and a ``MultiLayerNet`` otherwise. Class labels become
  0/1 one-hot targets for the ``sigmoid`` head (one 0/1 column when the labels are
  0/1) and for the ``identity`` head (the book's chapter 4 squared error); float
  targets given in ``data=`` are used as they are.
* Data is moved to the network's device once; minibatch indices are drawn on the
  host from ``numpy.random.default_rng(seed)`` (with replacement, like the book's
  ``random.choice``) and gathered on the device with ``xp.take``.
* One iteration: gradient (numerical or backprop) -> optimizer update -> loss of
  the minibatch at the updated parameters (the book's order). A NaN/inf loss
  stops the run with :class:`TrainingDiverged`.
* Train and test accuracy (whole sets, in batches to bound memory; none for the
  identity head) and loss are evaluated after every epoch of
  ``ceil(N / batch_size)`` iterations and after the last one.
* With ``out`` set, a checkpoint (parameters, optimizer state, RNG state, history)
  is written atomically after every evaluation; ``resume=True`` continues from it
  and reaches exactly what an uninterrupted run with the same seed reaches.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np  # host

from . import model
from .backend import resolve_backend, to_numpy
from .checkpoint import CHECKPOINT, Checkpoint
from .config import TrainConfig, check_memory
from .datasets import load_dataset
from .device import computing_on
from .gradient import resolve_step
from .history import History, new_history, write_outputs
from .metrics import evaluate, evaluate_loss, set_metrics
from .network import MultiLayerNet
from .numerical import model_gradient
from .optimizers import make_optimizer
from .progress import progress_bar, show_progress
from .rundir import RunDirectory, RunDirectoryError
from .two_layer import TwoLayerNet

__all__ = [
    "Trained",
    "TrainConfig",
    "TrainingDiverged",
    "train",
    "evaluate",
    "evaluate_loss",
    "build_network",
    "check_memory",
    "targets_for",
    "CHECKPOINT",
]


class Trained(NamedTuple):
    """What :func:`train` returns: ``net, history = xpnet.train(config)``."""

    net: object  # the trained TwoLayerNet or MultiLayerNet
    history: History  # JSON values only (json.dumps works)
    written: list  # the files written into ``out`` (none without ``out``)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, sat at the head's cap, or stayed far above
    the loss before training."""


#: -log(1e-7): the largest value one softmax term can take (the +1e-7 caps it)
LOSS_CAP = -math.log(1e-7)
# a run whose whole-set loss reaches this share of the cap has diverged
_CAP_SHARE = 0.8
# ... or stays above this multiple of the loss before training for two evaluations
_ABOVE_START = 2.0


def _diverged(history: dict, head: str, n_outputs: int) -> str | None:
    """Why the run in ``history`` diverged, or None (checked at each evaluation)."""
    losses, start = history.get("train_loss", []), history.get("initial_loss")
    if not losses:
        return None
    cap = {"softmax": LOSS_CAP, "sigmoid": n_outputs * LOSS_CAP}.get(head)
    if cap is not None and losses[-1] >= _CAP_SHARE * cap:
        return f"the loss is {losses[-1]:.3g}, at the cap {cap:.3g} of the book's +1e-7"
    if start is not None and len(losses) >= 2 and min(losses[-2:]) > _ABOVE_START * start:
        return (
            f"the loss stayed above {_ABOVE_START:g}x its value before training "
            f"({losses[-2]:.3g}, {losses[-1]:.3g} against {start:.3g})"
        )
    return None


def targets_for(output: str, t):
    """Host targets for a head: labels stay labels for softmax; integer labels become
    0/1 one-hot for the other heads (a single 0/1 column for 0/1 labels and the
    sigmoid head); float targets are kept, 1-D ones as one column.

    Returns
    -------
    (targets, output_size)
    """
    t = np.asarray(t)  # host
    if output == "softmax":
        return t, int(t.max()) + 1
    if t.ndim == 1 and np.issubdtype(t.dtype, np.integer):  # host
        if output == "sigmoid" and t.min() >= 0 and t.max() <= 1:
            return t[:, None].astype(np.float64), 1  # host
        return np.eye(int(t.max()) + 1)[t], int(t.max()) + 1  # host
    t = t.reshape(len(t), -1)
    return t, t.shape[1]


# per-step losses are brought to the host (and checked) every this many steps
_FLUSH = 50


def build_network(config: TrainConfig, input_size: int, output_size: int):
    """The book's TwoLayerNet for its own run, a MultiLayerNet for anything else."""
    common = dict(backend=config.backend, device=config.device, dtype=config.dtype)
    hidden = config.hidden_sizes
    if (
        len(hidden) == 1
        and config.output == "softmax"
        and not config.weight_decay
        and not isinstance(config.weight_init_std, str)
    ):
        return TwoLayerNet(
            input_size,
            hidden[0],
            output_size,
            config.weight_init_std,
            activation=config.activation,
            seed=config.seed,
            **common,
        )
    return MultiLayerNet(
        input_size,
        hidden,
        output_size,
        config.activation,
        config.weight_init_std,
        config.weight_decay,
        output=config.output,
        seed=config.seed,
        **common,
    )


def train(
    config: TrainConfig | None = None,
    *,
    out=None,
    resume=False,
    force=False,
    progress=None,
    log=print,
    data=None,
) -> Trained:
    """Run the book's training loop; return the history.

    Parameters
    ----------
    config : TrainConfig
    out : str, Path or RunDirectory, optional
        Directory for ``checkpoint.npz`` (written every epoch, atomically). It is
        locked for the run (see :mod:`xpnet.rundir`); a directory holding an
        earlier run is refused unless ``resume`` or ``force``. An open
        :class:`~xpnet.rundir.RunDirectory` (what the CLI passes) is used as it
        is: its opener holds the lock.
    resume : bool
        Continue from ``out/checkpoint.npz``; refused when there is none, or when
        it already has ``config.iters`` iterations or more.
    force : bool
        Replace an earlier run in ``out``.
    progress : bool, optional
        tqdm progress bar; default: in a terminal or a notebook (a text bar
        where ipywidgets is missing), none elsewhere.
    log : callable or None
        Receives one line per evaluation (``epoch, train acc, test acc``).
    data : tuple, optional
        ``((x_train, t_train), (x_test, t_test))`` host arrays instead of loading
        ``config.dataset``: class labels, or float targets ``(N, C)``/``(N,)``
        for the ``identity`` head (regression) and 0/1 ones for ``sigmoid``.

    Returns
    -------
    Trained
        ``(net, history, written)``: the trained network; the
        :class:`~xpnet.history.History` (``config`` resolved, ``loss`` per
        iteration, ``train_acc``/``test_acc``/``train_loss``/``test_loss`` and
        ``eval_iters`` per evaluation, ``wall_time``, ``iters_done``,
        ``time_per_iter``), a plain dict of JSON values; and the files written
        into ``out``: with ``out``, the same files as ``xpnet train`` writes
        (``params.npz``, ``history.json``, ``loss.png``, ``accuracy.png``,
        ``checkpoint.npz``).
    """
    if out is None:
        if resume:
            raise ValueError("resume=True needs out= (the directory of the run to continue)")
        return _train(config, None, False, progress, log, data)
    if isinstance(out, RunDirectory):  # opened (and locked) by the caller: used as it is
        return _train(config, out.path, resume, progress, log, data)
    with RunDirectory(out, resume=resume, force=force):
        return _train(config, Path(out), resume, progress, log, data)


def _train(config, out, resume, progress, log, data) -> Trained:
    config = config or TrainConfig()
    backend = resolve_backend(config.backend, config.device, config.dtype)
    with computing_on(backend):  # CuPy: every step on the run's GPU
        return _run(config, out, resume, progress, log, data)


@dataclass
class _Run:
    """What one run holds while it trains (the loop's state, not its result)."""

    config: TrainConfig
    net: Any  # TwoLayerNet or MultiLayerNet
    train_set: model.Batch
    test_set: model.Batch
    optimizer: Any
    rng: np.random.Generator  # host: minibatch indices
    history: Any  # History: a dict filled in as the run goes
    checkpoint: Any  # Checkpoint, or None without a directory
    say: Any


def _run(config, out, resume, progress, log, data) -> Trained:
    run = _prepare(config, out, data, log)
    if resume:
        _resume(run, out)
    else:
        run.history["initial_loss"] = set_metrics(run.net, run.train_set, run.config.eval_batch)[1]
    config, history = run.config, run.history
    progress = show_progress(progress)
    bar = progress_bar(
        total=config.iters, initial=history["iters_done"], disable=not progress,
        desc="train", unit="it", dynamic_ncols=True,
    )  # fmt: skip
    started = time.perf_counter() - history["wall_time"]
    saved_at = history["iters_done"] if resume else 0
    per_epoch = config.iters_per_epoch(run.train_set.size)
    losses = _Losses(run)
    step = _stepper(run)
    i = history["iters_done"]
    try:
        for i, minibatch in _minibatches(run, per_epoch):
            losses.append(step(minibatch), i + 1)
            bar.update(1)
            if (i + 1) % per_epoch == 0 or i + 1 == config.iters:
                losses.flush()
                history["wall_time"] = time.perf_counter() - started
                _evaluation(run, i + 1, bar, progress, log, losses.last)
                if run.checkpoint is not None:
                    run.checkpoint.save(run.net, run.optimizer, run.rng, history)
                    saved_at = i + 1
            elif losses.due():
                losses.flush()
                bar.set_postfix(loss=f"{losses.last:.4f}")
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(run, out, i, saved_at)) from None
    finally:
        bar.close()
    history["wall_time"] = time.perf_counter() - started
    history["time_per_iter"] = history["wall_time"] / max(history["iters_done"], 1)
    written = write_outputs(out, run.net, history) if out is not None else []
    return Trained(run.net, history, written)


def _prepare(config, out, data, log) -> _Run:
    """Data loaded and checked once on the device, the network, optimizer, RNG."""
    config = config or TrainConfig()
    if data is None:
        data = load_dataset(config.dataset, path=config.data_dir)
    (x_train, t_train), (x_test, t_test) = data
    config = config.resolved(len(t_train))
    t_train, n_train_out = targets_for(config.output, t_train)
    t_test, n_test_out = targets_for(config.output, t_test)
    if config.output != "softmax" and n_train_out != n_test_out:
        raise ValueError(
            f"train and test targets have {n_train_out} and {n_test_out} columns; they must match"
        )
    check_memory(config, x_train.shape[1], max(n_train_out, n_test_out))
    net = build_network(config, x_train.shape[1], max(n_train_out, n_test_out))
    # validated once, on the way to the device; every step then runs unchecked
    return _Run(
        config,
        net,
        net.batch(x_train, t_train),
        net.batch(x_test, t_test),
        make_optimizer(config.optimizer, config.lr),
        np.random.default_rng(config.seed),  # host: minibatch indices
        new_history(config),
        Checkpoint.of(out) if out is not None else None,
        log if log is not None else (lambda line: None),
    )


def _resume(run: _Run, out) -> None:
    """Parameters, optimizer, RNG and history from the run's checkpoint."""
    if not run.checkpoint.exists():
        raise RunDirectoryError(
            f"--resume: there is no {CHECKPOINT} in {out}: nothing to resume "
            "(leave out --resume to start a new run)"
        )
    history = run.checkpoint.load(run.net, run.optimizer, run.rng, run.config)
    for key in ("train_loss", "test_loss"):  # checkpoints of older versions
        history.setdefault(key, [])
    history.setdefault("initial_loss", None)
    done, iters = history["iters_done"], run.config.iters
    if done >= iters:
        raise RunDirectoryError(
            f"--resume: {run.checkpoint.path} already has {done} iterations; give --iters "
            f"(or --epochs) above {done} to train more"
        )
    history["config"]["iters"] = iters
    run.history = history
    run.say(f"resuming from iteration {done} of {iters}")


def _minibatches(run: _Run, per_epoch: int):
    """``(i, minibatch)`` from the run's current iteration to the last: each
    epoch's remaining indices drawn step by step on the host (the same stream as
    one draw per step, so a resumed run draws what an uninterrupted one draws),
    moved in one transfer, gathered on the device."""
    config, xp = run.config, run.net.xp
    n_train = run.train_set.size
    i = run.history["iters_done"]
    while i < config.iters:
        stop = min(config.iters, (i // per_epoch + 1) * per_epoch)
        draws = [run.rng.choice(n_train, config.batch_size) for _ in range(stop - i)]
        block = run.net.backend.from_host(np.concatenate(draws), dtype=xp.int64)  # host
        for k in range(stop - i):
            index = block[k * config.batch_size : (k + 1) * config.batch_size]
            yield i + k, run.train_set.take(index)
        i = stop


def _stepper(run: _Run):
    """One iteration on a minibatch: gradient -> update -> the minibatch's loss at
    the updated parameters (the book's order), left on the device."""
    net, config = run.net, run.config
    h = resolve_step(None, net.dtype, net.xp, complex_step=config.method == "complex")
    method = "structured" if config.method == "auto" else config.method

    def step(minibatch):
        layers = model.layers_of(net.params)
        if config.grad == "numerical":
            blocks = model_gradient(
                net.spec, layers, minibatch, h=h, method=method, n_threads=config.threads
            )
            grads = model.params_of([(b[:-1, :], b[-1, :]) for b in blocks])
        else:
            grads = model.params_of(model.backprop(net.spec, layers, minibatch))
        run.optimizer.update(net.params, grads)
        return model.loss(net.spec, model.layers_of(net.params), minibatch)

    return step


class _Losses:
    """Per-step losses kept on the device and brought to the host (and checked)
    every :data:`_FLUSH` steps or at an evaluation, in one transfer."""

    def __init__(self, run: _Run):
        self.run, self.last = run, float("nan")
        self.pending: list[Any] = []

    def append(self, loss, done: int) -> None:
        self.pending.append(loss)
        self.run.history["iters_done"] = done

    def due(self) -> bool:
        return len(self.pending) >= _FLUSH

    def flush(self) -> None:
        if not self.pending:
            return
        history, xp = self.run.history, self.run.net.xp
        values = [float(v) for v in to_numpy(xp.stack(self.pending))]
        first = history["iters_done"] - len(self.pending)
        self.pending.clear()
        for k, value in enumerate(values):
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"loss became {value} at iteration {first + k + 1}; the run diverged: "
                    f"try a smaller learning rate (e.g. --lr {_smaller(self.run.config.lr)})"
                )
        history["loss"].extend(values)
        self.last = values[-1]


def _evaluation(run: _Run, done: int, bar, progress, log, last) -> None:
    """Whole-set accuracy and loss after an epoch, logged and checked."""
    net, history, config = run.net, run.history, run.config
    acc_train, train_loss = set_metrics(net, run.train_set, config.eval_batch)
    acc_test, test_loss = set_metrics(net, run.test_set, config.eval_batch)
    history["train_loss"].append(train_loss)
    history["test_loss"].append(test_loss)
    history["eval_iters"].append(done)
    epoch = len(history["eval_iters"])
    if acc_train is not None:
        history["train_acc"].append(acc_train)
        history["test_acc"].append(acc_test)
        line = f"epoch {epoch}, train acc {acc_train:.4f}, test acc {acc_test:.4f}"
        bar.set_postfix(loss=f"{last:.4f}", train=f"{acc_train:.4f}", test=f"{acc_test:.4f}")
    else:
        line = f"epoch {epoch}, train loss {train_loss:.6g}, test loss {test_loss:.6g}"
        bar.set_postfix(loss=f"{last:.4g}", test=f"{test_loss:.4g}")
    if log is not None:
        (bar.write if progress else log)(line)
    why = _diverged(history, config.output, net.output_size)
    if why is not None:
        raise TrainingDiverged(
            f"the run diverged at iteration {done}: {why}; try a smaller "
            f"learning rate (e.g. --lr {_smaller(config.lr)})"
        )


def _interrupted(run: _Run, out, i: int, saved_at: int) -> str:
    if run.checkpoint is not None and saved_at:
        hint = (
            f"the checkpoint of iteration {saved_at} is in {out}: run the same command "
            "with --resume to continue"
        )
    else:
        hint = "no checkpoint was written yet (one is written after every epoch)"
    return f"at iteration {i}; {hint}"


def _smaller(lr) -> str:
    """A tenth of a resolved learning rate, as the divergence messages suggest it."""
    return f"{float(lr) / 10:g}"
