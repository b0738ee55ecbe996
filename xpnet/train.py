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

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np  # host

from . import model
from .backend import resolve_backend, to_numpy
from .checks import check_size
from .datasets import DATASETS, load_dataset
from .dtypes import DTYPES
from .functions import ACTIVATIONS
from .gradient import resolve_step
from .heads import HEADS
from .io import load_npz, save_npz
from .network import INITS, METHODS, MultiLayerNet
from .numerical import model_gradient
from .optimizers import OPTIMIZERS, make_optimizer
from .rundir import RunDirectory, RunDirectoryError
from .two_layer import TwoLayerNet

__all__ = [
    "TrainConfig",
    "TrainingDiverged",
    "train",
    "evaluate",
    "evaluate_loss",
    "build_network",
    "targets_for",
    "CHECKPOINT",
]

CHECKPOINT = "checkpoint.npz"


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


GRADS = ("numerical", "backprop")
# the commands a flag belongs to: all three; training only (train and the sweep's
# trials); and the two the sweep draws instead of taking
_ALL = ("train", "gradcheck", "sweep")
_TRAIN = ("train", "sweep")


def _flag(help_text, choices=None, *, kind="str", commands=_ALL, **more):
    """Metadata of a TrainConfig field that the command line offers as a flag.

    ``kind`` names how the text of the flag is parsed (``xpnet.cli`` holds the
    parsers); ``flag`` overrides ``--field-name``; fields with the same
    ``exclusive`` exclude each other.
    """
    return {"help": help_text, "choices": choices, "kind": kind, "commands": commands, **more}


@dataclass
class TrainConfig:
    """Everything that defines a run (``None`` fields get dataset defaults).

    Defaults are the book's run (784-50-10 sigmoid, SGD lr 0.1, batch 100,
    10,000 iterations) except on the embedded 8x8 digits, where 64 inputs give
    much smaller pre-activations: there SGD's default lr is 0.5 and the run is
    1,000 iterations (~97% test accuracy).

    ``hidden`` is one size or a list of sizes (one per hidden layer);
    ``weight_init_std`` a float or ``"he"``/``"relu"``/``"xavier"``/``"sigmoid"``;
    ``output`` the head; ``weight_decay`` the ``lambda`` of the decay term.

    Each field's metadata (help, choices, how to parse it) is also its flag: the
    ``train`` and ``gradcheck`` commands generate their options from this class.
    """

    dataset: str = field(
        default="digits",
        metadata=_flag("data set; digits is embedded (scikit-learn), no download", DATASETS),
    )
    data_dir: str | None = field(
        default=None,
        metadata=_flag("directory with the four IDX files (mnist, fashion-mnist)"),
    )
    backend: str = field(
        default="numpy",
        metadata=_flag("numpy, cupy, torch, array_api_strict or jax (pip install 'xpnet[jax]')"),
    )
    device: str | None = field(
        default=None,
        metadata=_flag("backend device, e.g. cuda:0 (torch), 0 (cupy)"),
    )
    dtype: str = field(default="float64", metadata=_flag("floating dtype", tuple(DTYPES)))
    grad: str = field(
        default="numerical",
        metadata=_flag("gradient used for the updates", GRADS, commands=_TRAIN),
    )
    method: str = field(
        default="auto",
        metadata=_flag(
            "numerical-gradient method (auto = structured); used with --grad numerical "
            "(train) and by gradcheck, ignored by --grad backprop",
            METHODS,
        ),
    )
    hidden: int | list = field(
        default=50,
        metadata=_flag("hidden units, one number per hidden layer, e.g. 100,100", kind="sizes"),
    )
    activation: str = field(
        default="sigmoid", metadata=_flag("hidden activation", tuple(ACTIVATIONS))
    )
    output: str = field(
        default="softmax",
        metadata=_flag(
            "head: softmax (labels), sigmoid (0/1 outputs), identity (regression)",
            tuple(sorted(HEADS)),
        ),
    )
    weight_decay: float = field(
        default=0.0,
        metadata=_flag(
            "lambda of the decay term 0.5*lambda*sum ||W||^2",
            kind="non_negative_float",
            commands=("train", "gradcheck"),
        ),
    )
    optimizer: str = field(
        default="sgd",
        metadata=_flag(
            "the book's chapter 6 optimizers", tuple(sorted(OPTIMIZERS)), commands=_TRAIN
        ),
    )
    lr: float | None = field(
        default=None,
        metadata=_flag(
            "learning rate (default: 0.1, the book's, for SGD; 0.5 on digits; "
            "the book's defaults for the other optimizers)",
            kind="positive_float",
            commands=("train",),
        ),
    )
    batch_size: int = field(
        default=100,
        metadata=_flag(
            "minibatch size (gradcheck: the first samples of the training set it checks on)",
            kind="positive_int",
        ),
    )
    iters: int | None = field(
        default=None,
        metadata=_flag(
            "iterations (default: 1000 on digits, 10000 otherwise)",
            kind="positive_int",
            commands=_TRAIN,
            exclusive="length",
        ),
    )
    epochs: int | None = field(
        default=None,
        metadata=_flag(
            "epochs of ceil(N / batch-size) iterations",
            kind="positive_int",
            commands=_TRAIN,
            exclusive="length",
        ),
    )
    seed: int = field(default=0, metadata=_flag("seed of weights and minibatches", kind="int"))
    weight_init_std: float | str = field(
        default=0.01,
        metadata=_flag(
            "initial weight std, or he/relu (sqrt(2/n)) or xavier/sigmoid (sqrt(1/n))",
            kind="init",
            flag="--init",
        ),
    )
    eval_batch: int = field(
        default=10_000,
        metadata=_flag(
            "samples per batch when evaluating a whole set", kind="positive_int", commands=_TRAIN
        ),
    )

    def resolved(self, train_size: int) -> TrainConfig:
        """A copy with defaults filled in and every field validated."""
        c = TrainConfig(**asdict(self))
        if c.dataset not in DATASETS:
            raise ValueError(f"dataset={c.dataset!r} is not known; expected one of {DATASETS}")
        if c.grad not in GRADS:
            raise ValueError(f"grad={c.grad!r} is not known; expected 'numerical' or 'backprop'")
        if c.method not in METHODS:
            raise ValueError(f"method={c.method!r} is not known; expected one of {METHODS}")
        if c.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer={c.optimizer!r} is not known; expected one of {sorted(OPTIMIZERS)}"
            )
        if isinstance(c.hidden, (list, tuple)):
            if not c.hidden:
                raise ValueError("hidden must name at least one hidden layer, got []")
            c.hidden = [check_size(f"hidden[{i}]", v) for i, v in enumerate(c.hidden)]
        else:
            c.hidden = check_size("hidden", c.hidden)
        if c.output not in HEADS:
            raise ValueError(f"output={c.output!r} is not known; expected one of {sorted(HEADS)}")
        if isinstance(c.weight_init_std, str) and c.weight_init_std.lower() not in INITS:
            raise ValueError(
                f"weight_init_std={c.weight_init_std!r} is not known; expected a float or "
                f"one of {sorted(INITS)}"
            )
        if not (isinstance(c.weight_decay, (int, float)) and 0 <= c.weight_decay < math.inf):
            raise ValueError(f"weight_decay must be a finite float >= 0, got {c.weight_decay!r}")
        check_size("batch_size", c.batch_size)
        check_size("eval_batch", c.eval_batch)
        if c.lr is None:
            default = make_optimizer(c.optimizer).lr
            c.lr = (0.5 if c.dataset == "digits" else 0.1) if c.optimizer == "sgd" else default
        if not (isinstance(c.lr, (int, float)) and 0 < c.lr < math.inf):
            raise ValueError(f"lr must be a positive finite number, got {c.lr}")
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

    @property
    def hidden_sizes(self) -> list[int]:
        return list(self.hidden) if isinstance(self.hidden, (list, tuple)) else [self.hidden]


def evaluate(net, x, t, batch: int = 10_000) -> float:
    """Accuracy over a whole data set, validated once, in batches on the device."""
    if not net.head.has_accuracy:
        net.head.hits(None, None)  # raises the head's message
    return _set_metrics(net, net.batch(x, t), batch, net.checked_layers())[0]


def evaluate_loss(net, x, t, batch: int = 10_000) -> float:
    """Mean loss (with weight decay) over a whole data set, validated once, in batches."""
    return _set_metrics(net, net.batch(x, t), batch, net.checked_layers())[1]


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


def _set_metrics(net, data: model.Batch, batch: int, layers=None):
    """Accuracy (None for the identity head) and mean loss of a whole validated set
    on the device (``layers``: default ``net.params``, unchecked): sums stay on the
    device, one transfer brings both to the host."""
    xp = net.xp
    layers = model.layers_of(net.params) if layers is None else layers
    n = data.size
    loss_sum, hits_sum, judged = None, None, 0
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        part = model.loss(net.spec, layers, data.rows(start, stop)) * (stop - start)
        loss_sum = part if loss_sum is None else loss_sum + part
        if net.head.has_accuracy:
            hits, total = model.hits(net.spec, layers, data.rows(start, stop))
            hits = xp.astype(hits, net.dtype)
            hits_sum = hits if hits_sum is None else hits_sum + hits
            judged += total
    if hits_sum is None:
        return None, float(loss_sum) / n
    hits_total, loss_total = (float(v) for v in to_numpy(xp.stack([hits_sum, loss_sum])))
    return hits_total / judged, loss_total / n


def _new_history(config: TrainConfig) -> dict:
    return {
        "config": asdict(config),
        "loss": [],
        "train_acc": [],
        "test_acc": [],
        "train_loss": [],
        "test_loss": [],
        "eval_iters": [],
        "initial_loss": None,
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
            "output",
            "weight_decay",
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
) -> dict:
    """Run the book's training loop; return the history.

    Parameters
    ----------
    config : TrainConfig
    out : str or Path, optional
        Directory for ``checkpoint.npz`` (written every epoch, atomically). It is
        locked for the run (see :mod:`xpnet.rundir`); a directory holding an
        earlier run is refused unless ``resume`` or ``force``.
    resume : bool
        Continue from ``out/checkpoint.npz``; refused when there is none, or when
        it already has ``config.iters`` iterations or more.
    force : bool
        Replace an earlier run in ``out``.
    progress : bool, optional
        tqdm progress bar; default: only when stderr is a terminal.
    log : callable or None
        Receives one line per evaluation (``epoch, train acc, test acc``).
    data : tuple, optional
        ``((x_train, t_train), (x_test, t_test))`` host arrays instead of loading
        ``config.dataset``: class labels, or float targets ``(N, C)``/``(N,)``
        for the ``identity`` head (regression) and 0/1 ones for ``sigmoid``.

    Returns
    -------
    dict
        ``config`` (resolved), ``loss`` (per iteration), ``train_acc``/``test_acc``
        (per evaluation; empty for the identity head), ``train_loss``/``test_loss``
        (whole sets, per evaluation), ``eval_iters``, ``wall_time`` (s),
        ``iters_done``, ``time_per_iter`` (s), and ``net`` (the trained
        :class:`TwoLayerNet` or :class:`MultiLayerNet`).
    """
    if out is None:
        if resume:
            raise ValueError("resume=True needs out= (the directory of the run to continue)")
        return _train(config, None, False, progress, log, data)
    with RunDirectory(out, resume=resume, force=force):
        return _train(config, Path(out), resume, progress, log, data)


def _train(config, out, resume, progress, log, data) -> dict:
    config = config or TrainConfig()
    backend = resolve_backend(config.backend, config.device, config.dtype)
    with backend.activate():  # CuPy: every step on the run's GPU
        return _run(config, out, resume, progress, log, data)


def _run(config, out, resume, progress, log, data) -> dict:
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    if data is None:
        data = load_dataset(config.dataset, path=config.data_dir)
    (x_train, t_train), (x_test, t_test) = data
    config = config.resolved(len(t_train))
    t_train, n_train_out = targets_for(config.output, t_train)
    t_test, n_test_out = targets_for(config.output, t_test)
    net = build_network(config, x_train.shape[1], max(n_train_out, n_test_out))
    if config.output != "softmax" and n_train_out != n_test_out:
        raise ValueError(
            f"train and test targets have {n_train_out} and {n_test_out} columns; they must match"
        )
    xp, backend = net.xp, net.backend
    # validated once, on the way to the device; every step then runs unchecked
    train_set = net.batch(x_train, t_train)
    test_set = net.batch(x_test, t_test)
    optimizer = make_optimizer(config.optimizer, config.lr)
    rng = np.random.default_rng(config.seed)  # host: minibatch indices
    checkpoint = out / CHECKPOINT if out is not None else None
    history = _new_history(config)
    say = log if log is not None else (lambda line: None)
    if resume:
        if not checkpoint.is_file():
            raise RunDirectoryError(
                f"--resume: there is no {CHECKPOINT} in {out}: nothing to resume "
                "(leave out --resume to start a new run)"
            )
        history = _load_checkpoint(checkpoint, net, optimizer, rng, config)
        for key in ("train_loss", "test_loss"):  # checkpoints of older versions
            history.setdefault(key, [])
        history.setdefault("initial_loss", None)
        done = history["iters_done"]
        if done >= config.iters:
            raise RunDirectoryError(
                f"--resume: {checkpoint} already has {done} iterations; give --iters "
                f"(or --epochs) above {done} to train more"
            )
        history["config"]["iters"] = config.iters
        say(f"resuming from iteration {done} of {config.iters}")
    else:
        history["initial_loss"] = _set_metrics(net, train_set, config.eval_batch)[1]
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
    saved_at = history["iters_done"] if resume else 0
    i = history["iters_done"]
    h = resolve_step(None, net.dtype, xp, complex_step=config.method == "complex")
    method = "structured" if config.method == "auto" else config.method
    pending = []  # per-step losses, still on the device
    block, block_start = None, i
    last = float("nan")

    def flush():
        """Bring the pending losses to the host in one transfer; check them there."""
        nonlocal last
        if not pending:
            return
        values = [float(v) for v in to_numpy(xp.stack(pending))]
        first = history["iters_done"] - len(pending)
        pending.clear()
        for k, value in enumerate(values):
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"loss became {value} at iteration {first + k + 1}; the run diverged: "
                    f"try a smaller learning rate (e.g. --lr {config.lr / 10:g})"
                )
        history["loss"].extend(values)
        last = values[-1]

    try:
        for i in range(history["iters_done"], config.iters):
            if block is None or i - block_start == block.shape[0] // config.batch_size:
                # this epoch's remaining minibatches, drawn step by step on the host
                # (the same stream as one draw per step) and moved in one transfer
                stop = min(config.iters, (i // per_epoch + 1) * per_epoch)
                draws = [rng.choice(len(t_train), config.batch_size) for _ in range(stop - i)]
                drawn = np.concatenate(draws)  # host
                block, block_start = backend.from_host(drawn, dtype=xp.int64), i
            offset = (i - block_start) * config.batch_size
            index = block[offset : offset + config.batch_size]
            minibatch = train_set.take(index)
            layers = model.layers_of(net.params)
            if config.grad == "numerical":
                blocks = model_gradient(net.spec, layers, minibatch, h=h, method=method)
                grads = model.params_of([(b[:-1, :], b[-1, :]) for b in blocks])
            else:
                grads = model.params_of(model.backprop(net.spec, layers, minibatch))
            optimizer.update(net.params, grads)
            pending.append(model.loss(net.spec, model.layers_of(net.params), minibatch))
            history["iters_done"] = i + 1
            bar.update(1)
            evaluation = (i + 1) % per_epoch == 0 or i + 1 == config.iters
            if evaluation or len(pending) == _FLUSH:
                flush()
            if evaluation:
                acc_train, train_loss = _set_metrics(net, train_set, config.eval_batch)
                acc_test, test_loss = _set_metrics(net, test_set, config.eval_batch)
                history["train_loss"].append(train_loss)
                history["test_loss"].append(test_loss)
                history["eval_iters"].append(i + 1)
                epoch = len(history["eval_iters"])
                if acc_train is not None:
                    history["train_acc"].append(acc_train)
                    history["test_acc"].append(acc_test)
                    line = f"epoch {epoch}, train acc {acc_train:.4f}, test acc {acc_test:.4f}"
                    bar.set_postfix(
                        loss=f"{last:.4f}", train=f"{acc_train:.4f}", test=f"{acc_test:.4f}"
                    )
                else:
                    line = f"epoch {epoch}, train loss {train_loss:.6g}, test loss {test_loss:.6g}"
                    bar.set_postfix(loss=f"{last:.4g}", test=f"{test_loss:.4g}")
                history["wall_time"] = time.perf_counter() - started
                if log is not None:
                    (bar.write if progress else log)(line)
                why = _diverged(history, config.output, net.output_size)
                if why is not None:
                    raise TrainingDiverged(
                        f"the run diverged at iteration {i + 1}: {why}; try a smaller "
                        f"learning rate (e.g. --lr {config.lr / 10:g})"
                    )
                if checkpoint is not None:
                    _save_checkpoint(checkpoint, net, optimizer, rng, history)
                    saved_at = i + 1
            elif not pending:
                bar.set_postfix(loss=f"{last:.4f}")
    except KeyboardInterrupt:
        if checkpoint is not None and saved_at:
            hint = (
                f"the checkpoint of iteration {saved_at} is in {out}: run the same command "
                "with --resume to continue"
            )
        else:
            hint = "no checkpoint was written yet (one is written after every epoch)"
        raise KeyboardInterrupt(f"interrupted at iteration {i}; {hint}") from None
    finally:
        bar.close()
    history["wall_time"] = time.perf_counter() - started
    history["time_per_iter"] = history["wall_time"] / max(history["iters_done"], 1)
    history["net"] = net
    return history
