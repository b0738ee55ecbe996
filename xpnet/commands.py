"""What each ``xpnet`` command does, once :mod:`xpnet.cli` has parsed its flags.

Rules of this module: a command takes the parsed ``argparse.Namespace`` and
returns the exit status; it prints what it does and where it writes; errors
are raised (the CLI turns each into one line and status 2). Nothing here
parses text.
"""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path

from .network import METHODS

__all__ = ["train", "gradcheck", "sweep", "bench", "fresh_run_directory"]


def _default_out(args, base: Path) -> Path:
    """``--out`` as given; else ``base`` to resume, or a fresh ``base[-k]``."""
    if args.out:
        return Path(args.out)
    return base if args.resume else fresh_run_directory(base)


def fresh_run_directory(base: Path) -> Path:
    """``base`` if nothing is there yet, else the first free ``base-2``,
    ``base-3``, ... (the default ``--out``: a new run never collides with an
    earlier one; an explicit ``--out`` keeps the refuse/--resume/--force rules)."""
    if not base.exists():
        return base
    k = 2
    while base.with_name(f"{base.name}-{k}").exists():
        k += 1
    return base.with_name(f"{base.name}-{k}")


def _config(args):
    """The TrainConfig of the flags a command generated from it (``xpnet.cli.FLAGS``)."""
    from .config import TrainConfig

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if isinstance(given.get("hidden"), list) and len(given["hidden"]) == 1:
        given["hidden"] = given["hidden"][0]  # one hidden layer: TwoLayerNet's int
    return TrainConfig(**given)


def train(args) -> int:
    from .backend import resolve_backend
    from .datasets import dataset_source, load_dataset
    from .train import train

    config = _config(args)
    data = load_dataset(config.dataset, path=config.data_dir)
    resolved = config.resolved(len(data[0][1]))
    # every error of the configuration before any directory is touched
    resolve_backend(resolved.backend, resolved.device, resolved.dtype)
    out = _default_out(args, Path("runs") / args.dataset)
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


def gradcheck(args) -> int:
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


def bench(args) -> int:
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


def sweep(args) -> int:
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
    out = _default_out(args, Path("runs") / f"sweep-{args.dataset}")
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
