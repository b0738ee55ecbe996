"""The ``xpnet`` command line: ``train``, ``gradcheck``, ``sweep`` and ``bench``.

Rules of this module: argparse only; every flag has its default in ``--help``;
the words of every TrainConfig flag are here (:data:`FLAGS`), their values are
checked by :mod:`xpnet.checks`' validators; bad input (unknown data set,
missing files, bad values) prints one line ``xpnet: error: ...`` and exits with
status 2, without a traceback. What a command does is :mod:`xpnet.commands`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from . import checks
from .config import GRADS
from .datasets import DATASETS
from .dtypes import DTYPES
from .functions import ACTIVATIONS
from .heads import HEADS
from .network import METHODS, check_init
from .optimizers import OPTIMIZERS
from .sweep import BOOK_SEARCH

__all__ = ["main", "parse_args", "FLAGS"]

# every error a user can cause, including OSError (a bad --out, a full disk):
# one line, exit 2
_ERRORS = (ValueError, TypeError, OSError, ImportError, RuntimeError, KeyError, ArithmeticError)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless its help already says it, or it is unset."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default == argparse.SUPPRESS:
            return text
        return text + " (default: %(default)s)"


def _init(name: str, value):
    """A weight init: a standard deviation >= 0 or one of :data:`INITS`."""
    return check_init(value.strip() if isinstance(value, str) else value, name)


def _init_text(name: str, text: str):
    try:
        return _init(name, float(text))
    except ValueError:
        return _init(name, text)


# argparse type= adapters of the shared validators (xpnet.checks): one wording
_positive_int = checks.argparse_type(checks.positive_int)
_positive_float = checks.argparse_type(checks.positive_float)
_non_negative_float = checks.argparse_type(checks.non_negative_float)
_hidden = checks.argparse_type(checks.sizes)
_log_range = checks.argparse_type(checks.log_range)
_share = checks.argparse_type(checks.share)
_init_type = checks.argparse_type(_init_text)


# how the text of a TrainConfig flag is parsed (its metadata's "kind")
_KINDS = {
    "str": str,
    "int": int,
    "positive_int": _positive_int,
    "positive_float": _positive_float,
    "non_negative_float": _non_negative_float,
    "sizes": _hidden,
    "init": _init_type,
}


# the commands a flag belongs to: all three; training only (train and the sweep's
# trials); and the two the sweep draws instead of taking
_ALL = ("train", "gradcheck", "sweep")
_TRAIN = ("train", "sweep")


def _flag(help_text, choices=None, *, kind="str", commands=_ALL, **more):
    """How the command line offers a TrainConfig field: ``kind`` names the
    parser of its text (:data:`_KINDS`); ``flag`` overrides ``--field-name``;
    fields with the same ``exclusive`` exclude each other."""
    return {"help": help_text, "choices": choices, "kind": kind, "commands": commands, **more}


#: Every TrainConfig field as a flag (a test checks that none is missing).
FLAGS = {
    "dataset": _flag("data set; digits is embedded (scikit-learn), no download", DATASETS),
    "data_dir": _flag("directory with the four IDX files (mnist, fashion-mnist)"),
    "backend": _flag("numpy, cupy, torch, array_api_strict or jax (pip install 'xpnet[jax]')"),
    "device": _flag("backend device, e.g. cuda:0 (torch), 0 (cupy)"),
    "dtype": _flag("floating dtype", tuple(DTYPES)),
    "grad": _flag("gradient used for the updates", GRADS, commands=_TRAIN),
    "method": _flag(
        "numerical-gradient method (auto = structured); used with --grad numerical "
        "(train) and by gradcheck, ignored by --grad backprop",
        METHODS,
    ),
    "hidden": _flag("hidden units, one number per hidden layer, e.g. 100,100", kind="sizes"),
    "activation": _flag("hidden activation", tuple(ACTIVATIONS)),
    "output": _flag(
        "head: softmax (labels), sigmoid (0/1 outputs), identity (regression)",
        tuple(sorted(HEADS)),
    ),
    "weight_decay": _flag(
        "lambda of the decay term 0.5*lambda*sum ||W||^2",
        kind="non_negative_float",
        commands=("train", "gradcheck"),
    ),
    "optimizer": _flag(
        "the book's chapter 6 optimizers", tuple(sorted(OPTIMIZERS)), commands=_TRAIN
    ),
    "lr": _flag(
        "learning rate (default: 0.1, the book's, for SGD; 0.5 on digits; "
        "the book's defaults for the other optimizers)",
        kind="positive_float",
        commands=("train",),
    ),
    "batch_size": _flag(
        "minibatch size (gradcheck: the first samples of the training set it checks on)",
        kind="positive_int",
    ),
    "iters": _flag(
        "iterations (default: 1000 on digits, 10000 otherwise)",
        kind="positive_int",
        commands=_TRAIN,
        exclusive="length",
    ),
    "epochs": _flag(
        "epochs of ceil(N / batch-size) iterations",
        kind="positive_int",
        commands=_TRAIN,
        exclusive="length",
    ),
    "seed": _flag("seed of weights and minibatches", kind="int"),
    "weight_init_std": _flag(
        "initial weight std, or he/relu (sqrt(2/n)) or xavier/sigmoid (sqrt(1/n))",
        kind="init",
        flag="--init",
    ),
    "eval_batch": _flag(
        "samples per batch when evaluating a whole set", kind="positive_int", commands=_TRAIN
    ),
    "threads": _flag(
        "cores of the numerical gradient on NumPy, in helper processes or threads "
        "($XPNET_PARALLEL; default: every core this process may use, or $XPNET_NUM_THREADS)",
        kind="positive_int",
        commands=("train",),
    ),
}


def _config_flags(p: argparse.ArgumentParser, command: str, helps=None) -> None:
    """One option per TrainConfig field that offers itself to ``command``
    (``helps``: another help text for some flags)."""
    from .config import TrainConfig

    helps = helps or {}

    exclusive = {}
    for f in fields(TrainConfig):
        meta = FLAGS[f.name]
        if command not in meta["commands"]:
            continue
        group: Any = p  # the parser, or a mutually exclusive group of it
        if meta.get("exclusive"):
            if meta["exclusive"] not in exclusive:
                exclusive[meta["exclusive"]] = p.add_mutually_exclusive_group()
            group = exclusive[meta["exclusive"]]
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        options = {"dest": f.name, "default": f.default, "help": helps.get(flag, meta["help"])}
        options["type"] = _KINDS[meta["kind"]]
        if meta["choices"] is not None:
            options["choices"] = tuple(meta["choices"])
        else:
            options["metavar"] = flag[2:].upper().replace("-", "_")
        group.add_argument(flag, **options)


class _Parser(argparse.ArgumentParser):
    """Errors in one line, with where to look, instead of the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    parser = _Parser(
        prog="xpnet",
        description="Train the book's two-layer network with a fast numerical gradient.",
        formatter_class=_Formatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"xpnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _gradcheck_parser(sub)
    _sweep_parser(sub)
    _bench_parser(sub)
    return parser.parse_args(argv)


def _train_parser(sub) -> None:
    t = sub.add_parser(
        "train", help="train and write history, plots and parameters", formatter_class=_Formatter
    )
    _config_flags(t, "train")
    t.add_argument(
        "--out",
        default=None,
        help="output directory (default: runs/DATASET, or -2, -3, ... where taken; "
        "with --resume: runs/DATASET)",
    )
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    t.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier run in OUT (refused without --force or --resume)",
    )
    t.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve the configuration and data, print them, train nothing",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def _gradcheck_parser(sub) -> None:
    g = sub.add_parser(
        "gradcheck",
        help="numerical vs backprop gradient, per parameter",
        formatter_class=_Formatter,
    )
    _config_flags(g, "gradcheck")
    g.add_argument("--h", type=_positive_float, default=None, help="step (default: from dtype)")
    g.add_argument(
        "--directions",
        type=_positive_int,
        default=None,
        help="check K random directions per parameter array instead of every coordinate",
    )


# the sweep's flags whose defaults are the book's search, not the book's run
_SWEEP_HELPS = {
    "--hidden": "hidden units per hidden layer (default: 6 layers of 100, the book's search)",
    "--epochs": "epochs of each trial (default: 50, the book's)",
    "--iters": "iterations of each trial, instead of --epochs",
    "--seed": "seed of the trials' draws, the validation split, weights and minibatches",
}


def _sweep_parser(sub) -> None:
    w = sub.add_parser(
        "sweep",
        help="random search of learning rate and weight decay, every trial a Dask task",
        formatter_class=_Formatter,
    )
    _config_flags(w, "sweep", _SWEEP_HELPS)
    # the book's search (chapter 6): 6 x 100 ReLU, He init, backprop, 500 samples
    w.set_defaults(**BOOK_SEARCH)
    w.add_argument("--trials", type=_positive_int, default=20, help="trials")
    for flag, default, what in (
        ("--lr-range", (1e-6, 1e-2), "learning rates (default: 1e-6,1e-2, the book's)"),
        ("--weight-decay-range", (1e-8, 1e-4), "weight decays (default: 1e-8,1e-4, the book's)"),
    ):
        w.add_argument(
            flag, type=_log_range, default=default, metavar="LOW,HIGH", help="log-uniform " + what
        )
    w.add_argument(
        "--validation",
        type=_share,
        default=0.2,
        help="share of the training set held out to score trials (never the test set)",
    )
    w.add_argument(
        "--train-size",
        type=_positive_int,
        default=500,
        help="first samples of the training set only, before the validation split",
    )
    where = w.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="worker processes of a local cluster on 127.0.0.1 (default: 2; one per GPU "
        "with --backend cupy and dask-cuda)",
    )
    where.add_argument(
        "--scheduler", default=None, help="address of a running Dask scheduler, e.g. tcp://h:8786"
    )
    w.add_argument(
        "--out",
        default=None,
        help="output directory (default: runs/sweep-DATASET, or -2, -3, ... where taken; "
        "with --resume: runs/sweep-DATASET)",
    )
    w.add_argument("--resume", action="store_true", help="continue the sweep in OUT")
    w.add_argument("--force", action="store_true", help="replace an earlier sweep in OUT")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")


def _bench_parser(sub) -> None:
    b = sub.add_parser(
        "bench", help="time the gradient methods on one configuration", formatter_class=_Formatter
    )
    b.add_argument(
        "--backend",
        default="numpy",
        help="numpy, cupy, torch, array_api_strict or jax (pip install 'xpnet[jax]')",
    )
    b.add_argument("--device", default=None, help="backend device")
    b.add_argument("--dtype", choices=tuple(DTYPES), default="float64", help="floating dtype")
    for flag, default, text in (
        ("--input", 784, "input size"),
        ("--hidden", 50, "hidden units"),
        ("--batch-size", 100, "samples"),
        ("--repeats", 5, "timed repeats"),
        ("--loop-sample", 200, "coordinates timed to extrapolate the book's loop"),
    ):
        b.add_argument(flag, type=_positive_int, default=default, help=text)
    b.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods to time besides the loop (default: structured,complex,"
        "backprop; batched too on a GPU: on a CPU it is as slow as the loop)",
    )
    b.add_argument("--seed", type=int, default=0, help="seed of weights and data")


def main(argv=None) -> int:
    args = parse_args(argv)
    from . import commands

    run = {
        "train": commands.train,
        "gradcheck": commands.gradcheck,
        "sweep": commands.sweep,
        "bench": commands.bench,
    }[args.command]
    try:
        return run(args)
    except _ERRORS as exc:
        print(f"xpnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        detail = f": {exc}" if str(exc) else ""
        print(f"xpnet: interrupted{detail}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
