"""What defines a training run: :class:`TrainConfig`.

Rules of this module:

* A config holds plain values (``json``-serialisable with ``asdict``); ``None``
  fields get the dataset's defaults in :meth:`TrainConfig.resolved`, which also
  validates every field once, before anything is loaded or written.
* Every field is also a flag of the command line: the flags' words (help,
  choices, how the text is parsed, which commands offer them) are
  :mod:`xpnet.cli`'s, not this module's.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from . import checks
from .checks import check_size
from .datasets import DATASETS
from .heads import HEADS
from .network import METHODS, check_init
from .optimizers import OPTIMIZERS, make_optimizer

__all__ = ["TrainConfig", "GRADS", "SHORTEN_VARIABLE", "shortened", "check_memory"]

#: Divides every run's iterations (at least 1 is left): for trying the docs'
#: commands quickly; the tests that run them use it.
SHORTEN_VARIABLE = "XPNET_SHORTEN"


def shortened(iters: int) -> int:
    """``iters`` divided by ``$XPNET_SHORTEN`` (unset: as it is)."""
    factor = os.environ.get(SHORTEN_VARIABLE, "").strip()
    if not factor:
        return iters
    if not factor.isdigit() or int(factor) < 1:
        raise ValueError(f"${SHORTEN_VARIABLE} must be a positive integer, got {factor!r}")
    return max(1, iters // int(factor))


GRADS = ("numerical", "backprop")


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

    Every field is also a flag of the command line (:data:`xpnet.cli.FLAGS`).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    backend: str = "numpy"
    device: str | None = None
    dtype: str = "float64"
    grad: str = "numerical"
    method: str = "auto"
    hidden: int | list = 50
    activation: str = "sigmoid"
    output: str = "softmax"
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    lr: float | None = None
    batch_size: int = 100
    iters: int | None = None
    epochs: int | None = None
    seed: int = 0
    weight_init_std: float | str = 0.01
    eval_batch: int = 10_000
    threads: int | None = None

    def resolved(self, train_size: int) -> TrainConfig:
        """A copy with defaults filled in and every field validated (a config
        that is the result of this is returned as it is: resolving is done once,
        and ``$XPNET_SHORTEN`` applied once)."""
        if getattr(self, "_resolved_for", None) == train_size:
            return self
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
        if c.threads is not None:
            checks.positive_int("threads", c.threads)
        if c.lr is None:
            default = make_optimizer(c.optimizer).lr
            c.lr = (0.5 if c.dataset == "digits" else 0.1) if c.optimizer == "sgd" else default
        checks.positive_float("lr", c.lr)
        per_epoch = self.iters_per_epoch(train_size)
        if c.iters is not None and c.epochs is not None:
            if c.iters != shortened(check_size("epochs", c.epochs) * per_epoch):
                raise ValueError("give iters or epochs, not both")
            # resolved before: its iters are the epochs' (resolving is idempotent)
        elif c.epochs is not None:
            c.iters = shortened(check_size("epochs", c.epochs) * per_epoch)
        elif c.iters is None:
            c.iters = shortened(1_000 if c.dataset == "digits" else 10_000)
        else:
            c.iters = shortened(check_size("iters", c.iters))
        check_size("iters", c.iters)
        object.__setattr__(c, "_resolved_for", train_size)  # not a field: not in asdict
        return c

    def iters_per_epoch(self, train_size: int) -> int:
        return max(math.ceil(train_size / self.batch_size), 1)

    @property
    def hidden_sizes(self) -> list[int]:
        return list(self.hidden) if isinstance(self.hidden, (list, tuple)) else [self.hidden]


def check_memory(config: TrainConfig, input_size: int, output_size: int) -> None:
    """Refuse a run that cannot fit in memory before anything is allocated: the
    parameters with their gradients and optimizer slots, an epoch of minibatch
    indices, a minibatch's activations, and an evaluation batch's."""
    sizes = [input_size, *config.hidden_sizes, output_size]
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    widths = sum(sizes)
    needed = 8 * (
        6 * params  # weights, gradients, two optimizer slots, host copies
        + 2 * config.batch_size  # an epoch's indices, drawn and moved
        + 6 * config.batch_size * widths  # a minibatch's forward and backward pass
        + 3 * config.eval_batch * widths  # a whole-set evaluation, in batches
    )
    checks.fits_in_memory("--hidden, --batch-size and --eval-batch together", needed)
