"""The book's chapter 6 hyperparameter search, every trial a Dask task.

Rules of this module:

* Trial ``i`` draws its learning rate and weight decay log-uniformly from
  ``numpy.random.default_rng([seed, i])``: a trial has the same values whatever
  the number of trials, the order they run in or the worker, so a sweep can be
  resumed and extended.
* Trials are scored on a validation split carved from the training set (a
  permutation from ``default_rng(seed)``); the test set is never read.
* The client scatters the training and validation arrays to every worker once;
  a trial task receives them as futures. A trial whose worker dies is run again
  by Dask (the data has copies on the other workers). A trial trains on one
  core unless its settings say ``threads``: the workers are the parallelism.
* ``sweep.json`` is rewritten atomically after every finished trial, records in
  trial order. A resumed sweep skips the finished trials and refuses one whose
  settings differ; a diverged trial is a record (``diverged``), not an error.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import CancelledError
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np  # host: draws, splits and records

from . import checks
from .backend import one_worker_per_gpu
from .cluster import ClusterError, close, connect, require_distributed, worker_address
from .datasets import load_dataset
from .heads import get_head
from .io import save_json
from .progress import progress_bar, show_progress
from .rundir import RunDirectory, RunDirectoryError
from .train import TrainConfig, TrainingDiverged, check_memory, train

__all__ = ["SweepConfig", "sweep", "trial_values", "SWEEP_JSON", "SWEEP_PNG"]

#: The network and training of the book's search (chapter 6): MultiLayerNet with
#: six hidden layers of 100 ReLUs, He initialisation, SGD, backprop
BOOK_SEARCH: dict[str, Any] = {
    "grad": "backprop",
    "hidden": [100] * 6,
    "activation": "relu",
    "weight_init_std": "he",
}

SWEEP_JSON = "sweep.json"
SWEEP_PNG = "sweep.png"
_FORMAT = 1


# the log-uniform ranges a sweep draws from
_RANGES = ("lr_range", "weight_decay_range")


@dataclass
class SweepConfig:
    """A random search over learning rate and weight decay.

    Attributes
    ----------
    train : TrainConfig
        Everything but ``lr`` and ``weight_decay`` (which each trial draws); its
        ``seed`` also seeds the draws and the validation split. Without
        ``iters``/``epochs``, 50 epochs (the book's). Default: the book's search,
        :data:`BOOK_SEARCH`.
    trials : int
    lr_range, weight_decay_range : (float, float)
        Log-uniform ranges; the book's ``10**U(-6, -2)`` and ``10**U(-8, -4)``.
    validation : float
        Share of the training set held out to score trials (the book's 0.2).
    train_size : int or None
        Use only the first samples of the training set (default: the book's 500),
        before the validation split; None: all of it.
    """

    train: TrainConfig = field(default_factory=lambda: TrainConfig(**BOOK_SEARCH))
    trials: int = 20
    lr_range: tuple = (1e-6, 1e-2)
    weight_decay_range: tuple = (1e-8, 1e-4)
    validation: float = 0.2
    train_size: int | None = 500

    def checked(self) -> SweepConfig:
        """A copy with defaults filled in; one clear ValueError for a bad field."""
        checks.positive_int("trials", self.trials)
        ranges = {name: checks.log_range(name, getattr(self, name)) for name in _RANGES}
        checks.share("validation", self.validation)
        if self.train_size is not None and checks.positive_int("train_size", self.train_size) < 2:
            raise ValueError(f"train_size must be an int >= 2, got {self.train_size!r}")
        base = self.train
        if not get_head(base.output).has_accuracy:
            raise ValueError(
                f"output={base.output!r} has no accuracy to score trials by; a sweep "
                "needs the softmax or sigmoid head"
            )
        if base.iters is None and base.epochs is None:
            base = replace(base, epochs=50)
        return replace(
            self,
            train=base,
            lr_range=ranges["lr_range"],
            weight_decay_range=ranges["weight_decay_range"],
        )

    def record(self) -> dict:
        """The settings a resumed sweep must share (JSON)."""
        settings = asdict(self)
        for key in ("lr", "weight_decay"):
            settings["train"].pop(key)
        settings.pop("trials")  # a resumed sweep may add trials
        return json_safe(settings)


def json_safe(value):
    """Tuples as lists, recursively (what JSON gives back)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def trial_values(config: SweepConfig, trial: int) -> tuple[float, float]:
    """``(lr, weight_decay)`` of trial ``trial`` (0-based)."""
    rng = np.random.default_rng([config.train.seed, trial])  # host
    lr = 10 ** rng.uniform(*np.log10(config.lr_range))  # host
    decay = 10 ** rng.uniform(*np.log10(config.weight_decay_range))  # host
    return float(lr), float(decay)


def _split(config: SweepConfig):
    """Training and validation arrays (host) carved from the training set."""
    (x, t), _ = load_dataset(config.train.dataset, path=config.train.data_dir)
    if config.train_size is not None:
        x, t = x[: config.train_size], t[: config.train_size]
    n_val = max(1, int(round(config.validation * len(t))))
    if n_val >= len(t):
        raise ValueError(f"validation={config.validation} leaves no training samples of {len(t)}")
    order = np.random.default_rng(config.train.seed).permutation(len(t))  # host
    val, rest = order[:n_val], order[n_val:]
    return (x[rest], t[rest]), (x[val], t[val])


def _trial(train_settings: dict, data, trial: int, lr: float, weight_decay: float) -> dict:
    """On a worker: one training run, scored on the validation split."""
    worker = worker_address()
    settings = {**train_settings, "lr": lr, "weight_decay": weight_decay}
    if settings.get("threads") is None:  # one core per trial: the workers are the parallelism
        settings["threads"] = 1  # (every core would start helper processes in every worker)
    config = TrainConfig(**settings)
    record: dict[str, Any] = {"trial": trial, "lr": lr, "weight_decay": weight_decay}
    start = time.perf_counter()
    try:
        history = train(config, data=data, log=None, progress=False).history
    except TrainingDiverged as exc:
        record.update(val_acc=None, train_acc=None, loss=None, diverged=str(exc))
        record.update(val_acc_curve=[], train_acc_curve=[])
    else:
        record.update(
            val_acc=history["test_acc"][-1],
            train_acc=history["train_acc"][-1],
            loss=history["loss"][-1],
            diverged=None,
            val_acc_curve=history["test_acc"],
            train_acc_curve=history["train_acc"],
        )
    record.update(seconds=time.perf_counter() - start, worker=worker)
    return record


def sweep(
    config: SweepConfig | None = None,
    *,
    client=None,
    workers: int | None = None,
    scheduler: str | None = None,
    out=None,
    resume: bool = False,
    force: bool = False,
    progress: bool | None = None,
    log=print,
) -> dict:
    """Run the random search; every trial is a task on a Dask cluster.

    Parameters
    ----------
    config : SweepConfig
    client : distributed.Client, optional
        A cluster to use (left open). Without it, one is started and closed:
        a scheduler at ``scheduler``, or a LocalCluster of ``workers`` processes
        on 127.0.0.1 (default 2; with the cupy backend and dask-cuda installed,
        LocalCUDACluster, one worker per GPU).
    out : str or Path, optional
        Directory for ``sweep.json`` and ``sweep.png`` (locked while the sweep
        runs; an earlier sweep there is refused unless ``resume``/``force``).
    resume : bool
        Continue the sweep in ``out``: finished trials are kept, not re-run.
    progress : bool, optional
        A progress bar over trials (default: when stderr is a terminal).
    log : callable or None
        Receives one line per finished trial.

    Returns
    -------
    dict
        ``settings`` and ``trials`` (records in trial order: ``trial``, ``lr``,
        ``weight_decay``, ``val_acc``, ``train_acc``, ``loss`` (final minibatch),
        ``seconds``, ``worker``, ``diverged``, and the per-epoch curves).
    """
    config = (config or SweepConfig()).checked()
    config.train.resolved(2)  # every training field checked before a cluster starts
    if workers is not None:
        workers = checks.positive_int("workers", workers)
        cores = os.cpu_count() or 1
        if workers > 4 * cores:
            raise ValueError(
                f"workers={workers}: this machine has {cores} cores; at most {4 * cores} "
                "worker processes (or give a scheduler=)"
            )
    say = log or (lambda line: None)
    if out is None:
        if resume:
            raise ValueError("resume=True needs out= (the directory of the sweep to continue)")
        return _sweep(config, None, {}, client, workers, scheduler, progress, say)
    with RunDirectory(out, resume=resume, force=force, outputs=(SWEEP_JSON, SWEEP_PNG)):
        done = _finished(Path(out), config) if resume else {}
        return _sweep(config, Path(out), done, client, workers, scheduler, progress, say)


def _finished(out: Path, config: SweepConfig) -> dict:
    """Finished trials of the sweep in ``out``, checked to share ``config``'s settings."""
    import json

    path = out / SWEEP_JSON
    if not path.exists():
        raise RunDirectoryError(f"--resume: {out} holds no {SWEEP_JSON} to continue")
    try:
        earlier = json.loads(path.read_text())
        settings, trials = earlier["settings"], earlier["trials"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunDirectoryError(f"--resume: {path} is damaged ({exc})") from None
    expected = config.record()
    if settings != expected:
        changed = sorted(
            k for k in set(settings) | set(expected) if settings.get(k) != expected.get(k)
        )
        raise RunDirectoryError(
            f"--resume: {path} was made with other settings ({', '.join(changed)} differ); "
            "use the same flags, another --out, or --force"
        )
    return _checked_records(path, trials, config.trials)


#: what every record of sweep.json holds, and of which types
_RECORD = {
    "trial": int,
    "lr": float,
    "weight_decay": float,
    "seconds": float,
    "worker": str,
    "val_acc_curve": list,
    "train_acc_curve": list,
}


def _checked_records(path: Path, trials, n_trials: int) -> dict:
    """The finished trials of ``sweep.json``, each record checked before any work."""
    if not isinstance(trials, list):
        raise RunDirectoryError(f"--resume: {path}: 'trials' must be a list of records")
    done = {}
    for k, record in enumerate(trials):
        where = f"--resume: {path}: trial record {k}"
        if not isinstance(record, dict):
            raise RunDirectoryError(f"{where} is not a record ({type(record).__name__})")
        for key, kind in _RECORD.items():
            value = record.get(key)
            ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
            if not ok or isinstance(value, bool):
                raise RunDirectoryError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
        trial = record["trial"]
        if not 0 <= trial < n_trials or trial in done:
            raise RunDirectoryError(f"{where}: trial {trial} is out of range or repeated")
        scored = record.get("val_acc")
        if record.get("diverged") is None and not (
            isinstance(scored, (int, float)) and 0 <= scored <= 1
        ):
            raise RunDirectoryError(f"{where}: 'val_acc' must be an accuracy, got {scored!r}")
        done[trial] = record
    return done


def _sweep(config, out, done, client, workers, scheduler, progress, say) -> dict:
    results = dict(done)
    todo = [i for i in range(config.trials) if i not in results]
    record = {"format": _FORMAT, "settings": config.record(), "trials": []}
    if todo:
        own = client is None
        data = _split(config)  # the data checked before a cluster starts
        (x_fit, t_fit), _ = data
        check_memory(config.train.resolved(len(t_fit)), x_fit.shape[1], int(t_fit.max()) + 1)
        client = _client(config, workers, scheduler) if own else client
        futures = {}
        try:
            # the data go to the cluster once, held as a task's result: recomputed
            # if its worker dies (scattered data would be lost with it)
            shared = client.submit(_held, data, pure=False)
            settings = asdict(config.train)
            for i in todo:
                lr, decay = trial_values(config, i)
                futures[client.submit(_trial, settings, shared, i, lr, decay, pure=False)] = i
            _collect(config, futures, results, record, out, progress, say)
        except OSError as exc:
            raise ClusterError(f"lost the Dask cluster during the sweep: {exc}") from None
        except KeyboardInterrupt:
            where = f"; --resume continues the sweep in {out}" if out is not None else ""
            raise KeyboardInterrupt(
                f"{len(results)} of {config.trials} trials finished{where}"
            ) from None
        finally:
            if own:
                close(client)
            elif futures:  # a cluster the caller keeps: stop what this sweep left running
                client.cancel([f for f in futures if not f.done()])
    record["trials"] = [results[k] for k in sorted(results)]
    if out is not None:
        save_json(out / SWEEP_JSON, record)
        from .plots import save_sweep_plot

        save_sweep_plot(record, out / SWEEP_PNG)
    return record


def _held(value):
    """On a worker: ``value`` (sent with the task), held for the trials."""
    return value


def _client(config, workers, scheduler):
    """A client of ``scheduler``, or of a local cluster started for the sweep
    (default: 2 workers; with dask-cuda and CuPy, one per GPU)."""
    import importlib.util

    cuda = one_worker_per_gpu(config.train.backend) and importlib.util.find_spec("dask_cuda")
    count = workers if workers is not None else (None if cuda else 2)
    return connect(scheduler, workers=count, cuda=bool(cuda))


def _collect(config, futures, results, record, out, progress, say) -> None:
    """Trial results as they finish, each recorded (and saved) at once."""

    distributed = require_distributed()
    show = show_progress(progress)
    initial = len(results)
    with progress_bar(total=config.trials, initial=initial, unit="trial", disable=not show) as bar:
        for future in distributed.as_completed(futures):
            try:
                result = future.result()
            except CancelledError as exc:
                raise ClusterError(f"a sweep trial was lost with the cluster: {exc}") from None
            results[result["trial"]] = result
            if out is not None:
                record["trials"] = [results[k] for k in sorted(results)]
                save_json(out / SWEEP_JSON, record)
            bar.update(1)
            (bar.write if show else say)(_line(result))


def _line(r: dict) -> str:
    score = "diverged" if r["diverged"] else f"val acc {r['val_acc']:.4f}"
    return (
        f"trial {r['trial']:>3}: lr {r['lr']:.3g}, weight decay {r['weight_decay']:.3g}: "
        f"{score} ({r['seconds']:.1f} s on {r['worker']})"
    )
