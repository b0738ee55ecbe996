"""The ``xpnet`` command line: ``train``, ``gradcheck`` and ``bench``.

Rules of this module: argparse only; every flag has its default in ``--help``;
bad input (unknown data set, missing files, bad values) prints one line
``xpnet: error: ...`` and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, fields
from pathlib import Path

from . import checks
from .dtypes import DTYPES
from .network import METHODS, check_init
from .sweep import BOOK_SEARCH

__all__ = ["main", "parse_args"]

# every error a user can cause, including OSError (a bad --out, a full disk):
# one line, exit 2
_ERRORS = (ValueError, TypeError, OSError, ImportError, RuntimeError, KeyError)


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


def _config_flags(p: argparse.ArgumentParser, command: str, helps=None) -> None:
    """One option per TrainConfig field that offers itself to ``command``
    (``helps``: another help text for some flags)."""
    from .config import TrainConfig

    helps = helps or {}

    exclusive = {}
    for f in fields(TrainConfig):
        meta = f.metadata
        if not meta or command not in meta["commands"]:
            continue
        group = p
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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
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
    t.add_argument("--out", default=None, help="output directory (default: runs/DATASET)")
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
    w.add_argument("--out", default=None, help="output directory (default: runs/sweep-DATASET)")
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


def _config(args):
    """The TrainConfig of the flags a command generated from it (:func:`_config_flags`)."""
    from .config import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if isinstance(given.get("hidden"), list) and len(given["hidden"]) == 1:
        given["hidden"] = given["hidden"][0]  # one hidden layer: TwoLayerNet's int
    return TrainConfig(**given)


def _train(args) -> int:
    from .datasets import dataset_source, load_dataset
    from .train import train

    config = _config(args)
    data = load_dataset(config.dataset, path=config.data_dir)
    resolved = config.resolved(len(data[0][1]))
    out = Path(args.out or Path("runs") / args.dataset)
    print("xpnet train")
    for key, value in asdict(resolved).items():
        print(f"  {key:<16}{value}")
    print(
        f"  {'train/test':<16}{len(data[0][1])} / {len(data[1][1])} samples, "
        f"{data[0][0].shape[1]} features"
    )
    print(f"  {'data from':<16}{dataset_source(config.dataset, path=config.data_dir)}")
    print(f"  {'out':<16}{out}")
    if args.dry_run:
        from .backend import resolve_backend

        resolve_backend(resolved.backend, resolved.device, resolved.dtype)  # as train() will
        print("dry run: configuration and data are valid; nothing trained or written")
        return 0
    from .rundir import RunDirectory

    with RunDirectory(out, resume=args.resume, force=args.force) as run_dir:
        if run_dir.replaced:
            print(f"replacing the earlier run in {out} (--force): {', '.join(run_dir.replaced)}")
        _, history, written = train(
            resolved,
            out=run_dir,  # locked once, here
            resume=args.resume,
            progress=False if args.no_progress else None,
            data=data,
        )
    if history["train_acc"]:
        final = f"train acc {history['train_acc'][-1]:.4f}, test acc {history['test_acc'][-1]:.4f}"
    else:
        final = (
            f"train loss {history['train_loss'][-1]:.6g}, test loss {history['test_loss'][-1]:.6g}"
        )
    print(
        f"done: {history['iters_done']} iterations in {history['wall_time']:.1f} s "
        f"({history['time_per_iter'] * 1e3:.1f} ms/iter); final {final}"
    )
    print(f"wrote {out}/{', '.join(written)}")
    return 0


def _gradcheck(args) -> int:
    from .datasets import load_dataset
    from .gradcheck import gradient_check
    from .train import build_network, targets_for

    (x, t), _ = load_dataset(args.dataset, path=args.data_dir)
    t, output_size = targets_for(args.output, t)
    net = build_network(_config(args), x.shape[1], output_size)
    n = min(args.batch_size, len(t))
    print(f"gradient check on the first {n} samples of the {args.dataset} training set")
    result = gradient_check(
        net,
        x[: args.batch_size],
        t[: args.batch_size],
        method=args.method,
        h=args.h,
        directions=args.directions,
    )
    return 0 if result.passed else 1


def _bench(args) -> int:
    from .backend import resolve_backend
    from .bench import bench_methods, format_rows
    from .timing import blas_threads

    backend = resolve_backend(args.backend, args.device, args.dtype)
    on_gpu = backend.on_gpu
    if args.methods is None:
        methods = ["structured", "complex", "backprop"] + (["batched"] if on_gpu else [])
        if not on_gpu:
            print("batched is off on the CPU (as slow as the loop there); --methods adds it")
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        known = [m for m in METHODS if m not in ("auto", "loop")] + ["backprop"]
        unknown = [m for m in methods if m not in known]
        if unknown:
            raise ValueError(f"--methods: unknown {unknown}; expected some of {known}")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"BLAS threads: {blas_threads()}; load average (1, 5, 15 min): {load}")
    rows = bench_methods(
        backend=args.backend,
        device=args.device,
        dtype=args.dtype,
        sizes=(args.input, args.hidden, 10),
        batch=args.batch_size,
        repeats=args.repeats,
        loop_sample=args.loop_sample,
        seed=args.seed,
        methods=tuple(methods),
        log=lambda line: print(line, flush=True),
    )
    print(format_rows(rows))
    return 0


def _sweep(args) -> int:
    from .datasets import dataset_source
    from .sweep import SWEEP_JSON, SWEEP_PNG, SweepConfig, sweep

    config = SweepConfig(
        train=_config(args),
        trials=args.trials,
        lr_range=args.lr_range,
        weight_decay_range=args.weight_decay_range,
        validation=args.validation,
        train_size=args.train_size,
    ).checked()
    out = Path(args.out or Path("runs") / f"sweep-{args.dataset}")
    where = args.scheduler or f"local cluster of {args.workers or 2} workers on 127.0.0.1"
    print("xpnet sweep")
    print(f"  trials          {config.trials}")
    print(f"  lr              log-uniform in {config.lr_range}")
    print(f"  weight decay    log-uniform in {config.weight_decay_range}")
    print(f"  validation      {config.validation} of the training set")
    length = (
        f"{config.train.epochs} epochs" if config.train.epochs else f"{config.train.iters} iters"
    )
    print(
        f"  each trial      {args.dataset}, {config.train.grad} gradient, "
        f"{args.optimizer}, {length}"
    )
    print(f"  data from       {dataset_source(args.dataset, path=args.data_dir)}")
    print(f"  cluster         {where}")
    print(f"  out             {out}")
    result = sweep(
        config,
        workers=args.workers,
        scheduler=args.scheduler,
        out=out,
        resume=args.resume,
        force=args.force,
        progress=False if args.no_progress else None,
    )
    scored = [r for r in result["trials"] if r["val_acc"] is not None]
    if scored:
        best = max(scored, key=lambda r: r["val_acc"])
        print(
            f"best: trial {best['trial']}, lr {best['lr']:.3g}, weight decay "
            f"{best['weight_decay']:.3g}: val acc {best['val_acc']:.4f}"
        )
    print(f"wrote {out / SWEEP_JSON}, {SWEEP_PNG}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    run = {"train": _train, "gradcheck": _gradcheck, "sweep": _sweep, "bench": _bench}[args.command]
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
