"""What defines a training run: :class:`TrainConfig`, whose fields are also the
command line's flags.

Rules of this module:

* A config holds plain values (``json``-serialisable with ``asdict``); ``None``
  fields get the dataset's defaults in :meth:`TrainConfig.resolved`, which also
  validates every field once, before anything is loaded or written.
* Each field's metadata (help, choices, how its text is parsed, which commands
  offer it) is its flag: :mod:`xpnet.cli` generates the ``train``,
  ``gradcheck`` and ``sweep`` options from it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from . import checks
from .checks import check_size
from .datasets import DATASETS
from .dtypes import DTYPES
from .functions import ACTIVATIONS
from .heads import HEADS
from .network import METHODS, check_init
from .optimizers import OPTIMIZERS, make_optimizer

__all__ = ["TrainConfig", "GRADS"]

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
        checks.one_of("dataset", c.dataset, DATASETS)
        checks.one_of("grad", c.grad, GRADS)
        checks.one_of("method", c.method, METHODS)
        checks.one_of("optimizer", c.optimizer, OPTIMIZERS)
        checks.one_of("output", c.output, HEADS)
        if isinstance(c.hidden, (list, tuple)):
            c.hidden = checks.sizes("hidden", list(c.hidden))
        else:
            c.hidden = check_size("hidden", c.hidden)
        check_init(c.weight_init_std)
        checks.non_negative_float("weight_decay", c.weight_decay)
        check_size("batch_size", c.batch_size)
        check_size("eval_batch", c.eval_batch)
        if c.lr is None:
            default = make_optimizer(c.optimizer).lr
            c.lr = (0.5 if c.dataset == "digits" else 0.1) if c.optimizer == "sgd" else default
        checks.positive_float("lr", c.lr)
        per_epoch = self.iters_per_epoch(train_size)
        if c.iters is not None and c.epochs is not None:
            if c.iters != check_size("epochs", c.epochs) * per_epoch:
                raise ValueError("give iters or epochs, not both")
            # resolved before: its iters are the epochs' (resolving is idempotent)
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
