"""The book's training loop (``train_neuralnet.py``), on any backend.

Rules of this module:

* Data is moved to the network's device once; minibatch indices are drawn on the
  host from ``numpy.random.default_rng(seed)`` (with replacement, like the book's
  ``random.choice``) and gathered on the device with ``xp.take``.
* One iteration: gradient (numerical or backprop) -> optimizer update -> loss of
  the minibatch at the updated parameters (the book's order). A NaN/inf loss
  stops the run with :class:`TrainingDiverged`.
* Train and test accuracy (whole sets, in batches to bound memory) are evaluated
  after every epoch of ``ceil(N / batch_size)`` iterations and after the last one.
* With ``out`` set, a checkpoint (parameters, optimizer state, RNG state, history)
  is written atomically after every evaluation; ``resume=True`` continues from it
  and reaches exactly what an uninterrupted run with the same seed reaches.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np  # host

from .backend import to_numpy
from .checks import check_size
from .datasets import DATASETS, load_dataset
from .io import load_npz, save_npz
from .network import METHODS, TwoLayerNet
from .optimizers import OPTIMIZERS, make_optimizer

__all__ = ["TrainConfig", "TrainingDiverged", "train", "evaluate", "CHECKPOINT"]

CHECKPOINT = "checkpoint.npz"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Everything that defines a run (``None`` fields get dataset defaults).

    Defaults are the book's run (784-50-10 sigmoid, SGD lr 0.1, batch 100,
    10,000 iterations) except on the embedded 8x8 digits, where 64 inputs give
    much smaller pre-activations: there SGD's default lr is 0.5 and the run is
    1,000 iterations (~97% test accuracy).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    backend: str = "numpy"
    device: str | None = None
    dtype: str = "float64"
    grad: str = "numerical"
    method: str = "auto"
    hidden: int = 50
    activation: str = "sigmoid"
    optimizer: str = "sgd"
    lr: float | None = None
    batch_size: int = 100
    iters: int | None = None
    epochs: int | None = None
    seed: int = 0
    weight_init_std: float = 0.01
    eval_batch: int = 10_000

    def resolved(self, train_size: int) -> TrainConfig:
        """A copy with defaults filled in and every field validated."""
        c = TrainConfig(**asdict(self))
        if c.dataset not in DATASETS:
            raise ValueError(f"dataset={c.dataset!r} is not known; expected one of {DATASETS}")
        if c.grad not in ("numerical", "backprop"):
            raise ValueError(f"grad={c.grad!r} is not known; expected 'numerical' or 'backprop'")
        if c.method not in METHODS:
            raise ValueError(f"method={c.method!r} is not known; expected one of {METHODS}")
        if c.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer={c.optimizer!r} is not known; expected one of {sorted(OPTIMIZERS)}"
            )
        check_size("hidden", c.hidden)
        check_size("batch_size", c.batch_size)
        check_size("eval_batch", c.eval_batch)
        if c.lr is None:
            default = make_optimizer(c.optimizer).lr
            c.lr = (0.5 if c.dataset == "digits" else 0.1) if c.optimizer == "sgd" else default
        if not c.lr > 0:
            raise ValueError(f"lr must be positive, got {c.lr}")
        if c.iters is not None and c.epochs is not None:
            raise ValueError("give iters or epochs, not both")
        per_epoch = self.iters_per_epoch(train_size)
        if c.epochs is not None:
            c.iters = check_size("epochs", c.epochs) * per_epoch
        elif c.iters is None:
            c.iters = 1_000 if c.dataset == "digits" else 10_000
        check_size("iters", c.iters)
        return c

    def iters_per_epoch(self, train_size: int) -> int:
        return max(math.ceil(train_size / self.batch_size), 1)


def evaluate(net, x, t, batch: int = 10_000) -> float:
    """Accuracy over a whole data set already on the device, in batches."""
    n = x.shape[0]
    hits = 0.0
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        hits += net.accuracy(x[start:stop, ...], t[start:stop]) * (stop - start)
    return hits / n


def _new_history(config: TrainConfig) -> dict:
    return {
        "config": asdict(config),
        "loss": [],
        "train_acc": [],
        "test_acc": [],
        "eval_iters": [],
        "wall_time": 0.0,
        "iters_done": 0,
    }


def _save_checkpoint(path: Path, net, optimizer, rng, history) -> None:
    arrays = {f"param/{k}": v for k, v in net.params.items()}
    arrays.update({f"opt/{k}": v for k, v in optimizer.state_dict().items()})
    meta = {"history": history, "rng": rng.bit_generator.state}
    arrays["meta"] = np.asarray(json.dumps(meta))  # host
    save_npz(path, {k: to_numpy(v) if k.startswith("param/") else v for k, v in arrays.items()})


def _load_checkpoint(path: Path, net, optimizer, rng, config: TrainConfig) -> dict:
    data = load_npz(path)
    meta = json.loads(str(data["meta"]))
    saved = meta["history"]["config"]
    changed = [
        k
        for k in (
            "dataset",
            "hidden",
            "activation",
            "optimizer",
            "lr",
            "batch_size",
            "seed",
            "grad",
            "dtype",
            "weight_init_std",
        )
        if saved.get(k) != getattr(config, k)
    ]
    if changed:
        raise ValueError(
            f"--resume: {path} was written with different settings ({', '.join(changed)}); "
            "use the same settings or another --out"
        )
    net.params = {k: net.backend.from_host(data[f"param/{k}"], dtype=net.dtype) for k in net.params}
    optimizer.load_state_dict(
        {k[4:]: v for k, v in data.items() if k.startswith("opt/")}, net.backend
    )
    rng.bit_generator.state = meta["rng"]
    return meta["history"]


def train(
    config: TrainConfig | None = None,
    *,
    out=None,
    resume=False,
    progress=None,
    log=print,
    data=None,
) -> dict:
    """Run the book's training loop; return the history.

    Parameters
    ----------
    config : TrainConfig
    out : str or Path, optional
        Directory for ``checkpoint.npz`` (written every epoch, atomically).
    resume : bool
        Continue from ``out/checkpoint.npz`` if it exists.
    progress : bool, optional
        tqdm progress bar; default: only when stderr is a terminal.
    log : callable or None
        Receives one line per evaluation (``epoch, train acc, test acc``).
    data : tuple, optional
        ``((x_train, t_train), (x_test, t_test))`` host arrays instead of loading
        ``config.dataset``.

    Returns
    -------
    dict
        ``config`` (resolved), ``loss`` (per iteration), ``train_acc``/``test_acc``
        (per evaluation), ``eval_iters``, ``wall_time`` (s), ``iters_done``,
        ``time_per_iter`` (s), and ``net`` (the trained :class:`TwoLayerNet`).
    """
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    if data is None:
        data = load_dataset(config.dataset, path=config.data_dir)
    (x_train, t_train), (x_test, t_test) = data
    config = config.resolved(len(t_train))
    net = TwoLayerNet(
        x_train.shape[1],
        config.hidden,
        int(max(t_train.max(), t_test.max())) + 1,
        config.weight_init_std,
        activation=config.activation,
        backend=config.backend,
        device=config.device,
        dtype=config.dtype,
        seed=config.seed,
    )
    xp, backend = net.xp, net.backend
    x_train_d = backend.from_host(x_train, dtype=net.dtype)
    t_train_d = backend.from_host(t_train, dtype=xp.int64)
    x_test_d = backend.from_host(x_test, dtype=net.dtype)
    t_test_d = backend.from_host(t_test, dtype=xp.int64)
    optimizer = make_optimizer(config.optimizer, config.lr)
    rng = np.random.default_rng(config.seed)  # host: minibatch indices
    checkpoint = Path(out) / CHECKPOINT if out is not None else None
    history = _new_history(config)
    if resume and checkpoint is not None and checkpoint.is_file():
        history = _load_checkpoint(checkpoint, net, optimizer, rng, config)
        history["config"]["iters"] = config.iters
    per_epoch = config.iters_per_epoch(len(t_train))
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(
        total=config.iters,
        initial=history["iters_done"],
        disable=not progress,
        desc="train",
        unit="it",
        dynamic_ncols=True,
    )
    started = time.perf_counter() - history["wall_time"]
    try:
        for i in range(history["iters_done"], config.iters):
            index = backend.from_host(rng.choice(len(t_train), config.batch_size), dtype=xp.int64)
            x_batch = xp.take(x_train_d, index, axis=0)
            t_batch = xp.take(t_train_d, index, axis=0)
            if config.grad == "numerical":
                grads = net.numerical_gradient(x_batch, t_batch, method=config.method)
            else:
                grads = net.gradient(x_batch, t_batch)
            optimizer.update(net.params, grads)
            loss = float(net.loss(x_batch, t_batch))
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss} at iteration {i + 1}; the run diverged: "
                    f"try a smaller learning rate (e.g. --lr {config.lr / 10:g})"
                )
            history["loss"].append(loss)
            history["iters_done"] = i + 1
            bar.update(1)
            if (i + 1) % per_epoch == 0 or i + 1 == config.iters:
                train_acc = evaluate(net, x_train_d, t_train_d, config.eval_batch)
                test_acc = evaluate(net, x_test_d, t_test_d, config.eval_batch)
                history["train_acc"].append(train_acc)
                history["test_acc"].append(test_acc)
                history["eval_iters"].append(i + 1)
                history["wall_time"] = time.perf_counter() - started
                epoch = len(history["train_acc"])
                bar.set_postfix(
                    loss=f"{loss:.4f}", train=f"{train_acc:.4f}", test=f"{test_acc:.4f}"
                )
                if log is not None:
                    line = f"epoch {epoch}, train acc {train_acc:.4f}, test acc {test_acc:.4f}"
                    (bar.write if progress else log)(line)
                if checkpoint is not None:
                    _save_checkpoint(checkpoint, net, optimizer, rng, history)
            elif (i + 1) % 10 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")
    finally:
        bar.close()
    history["wall_time"] = time.perf_counter() - started
    history["time_per_iter"] = history["wall_time"] / max(history["iters_done"], 1)
    history["net"] = net
    return history
