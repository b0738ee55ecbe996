"""The numerical gradient and the hyperparameter sweep on a local Dask cluster.

Three measurements, each side by side in one run:

1. A full-batch numerical gradient (``--images`` Fashion-MNIST training images,
   the book's 784-50-10 net, the default structured method) in this process,
   and sharded over LocalClusters of 1 and 2 worker processes; interleaved
   rounds, medians and min-max. The clusters start once, before timing.
2. The per-task overhead: a gradient so small that computing it costs nothing
   (a 4-3-2 net, 8 samples), in this process and sharded into 2, 8 and 32
   tasks on the 2-worker cluster; (sharded - local) / tasks.
3. A ``--trials``-trial sweep (the book's search, ``xpnet sweep``'s defaults) on
   the 2-worker cluster, against the same trials run one after another in this
   process.

Every process runs one BLAS thread (Dask's nannies set OPENBLAS_NUM_THREADS=1
for workers; this process uses threadpoolctl), so cores are compared, not BLAS
pools.

    python scripts/bench_dask.py --out bench-out/dask.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from harness import machine_info  # scripts/harness.py
from tqdm.auto import tqdm

import xpnet
from xpnet.bench import mnist_like_batch
from xpnet.io import save_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--images", type=int, default=10_000, help="images in the full batch")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the gradient")
    p.add_argument("--overhead-rounds", type=int, default=20, help="rounds of the tiny gradient")
    p.add_argument("--trials", type=int, default=20, help="trials of the sweep")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and trials")
    p.add_argument("--out", default="bench-out/dask.json", help="JSON output")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, one round")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _stats(values):
    return {
        "median_s": statistics.median(values),
        "min_s": min(values),
        "max_s": max(values),
        "n": len(values),
    }


def _images(n, dry):
    if not dry:
        try:
            (x, t), _ = xpnet.load_fashion_mnist()
            return x[:n].astype("float64"), t[:n], "fashion-mnist"
        except xpnet.datasets.DataNotFoundError:
            pass
    x, t = mnist_like_batch(n, 784, 10, seed=0)
    return x, t, "synthetic (MNIST-like)"


def _gradient(net, x, t, clients, rounds, show):
    from threadpoolctl import threadpool_limits

    reference = net.numerical_gradient(x, t)  # warm-up, and the values to agree with
    for client in clients.values():
        if client is not None:
            net.numerical_gradient(x, t, client=client)  # warm-up: workers import xpnet
    times = {name: [] for name in clients}
    worst = 0.0
    for _ in tqdm(range(rounds), desc="full batch", disable=not show):
        for name, client in clients.items():
            start = time.perf_counter()
            with threadpool_limits(1):
                grads = net.numerical_gradient(x, t, client=client)
            times[name].append(time.perf_counter() - start)
            for key in grads:
                diff = float(xpnet.to_numpy(grads[key] - reference[key]).__abs__().max())
                scale = float(xpnet.to_numpy(reference[key]).__abs__().max()) or 1.0
                worst = max(worst, diff / scale)
    return {name: _stats(v) for name, v in times.items()}, worst


def _overhead(client, rounds, show):
    net = xpnet.MultiLayerNet(4, [3], 2, "sigmoid", 0.5, seed=0)
    x, t = mnist_like_batch(8, 4, 2, seed=1)
    net.numerical_gradient(x, t, client=client)  # warm-up
    rows = {}
    local = []
    sharded = {tasks: [] for tasks in (2, 8, 32)}
    for _ in tqdm(range(rounds), desc="overhead", disable=not show):
        start = time.perf_counter()
        net.numerical_gradient(x, t)
        local.append(time.perf_counter() - start)
        for tasks in sharded:
            shards = min(tasks, 8)
            blocks = tasks // shards
            start = time.perf_counter()
            net.numerical_gradient(x, t, client=client, shards=shards, param_blocks=blocks)
            sharded[tasks].append(time.perf_counter() - start)
    rows["local"] = _stats(local)
    for tasks, values in sharded.items():
        row = _stats(values)
        row["tasks"] = tasks
        row["per_task_s"] = (row["median_s"] - rows["local"]["median_s"]) / tasks
        rows[f"{tasks} tasks"] = row
    return rows


def _sweep(client, trials, seed, dry):
    from xpnet.sweep import BOOK_SEARCH, SweepConfig, _split, _trial, sweep, trial_values

    train = xpnet.TrainConfig(**{**BOOK_SEARCH, "seed": seed})
    if dry:
        train = xpnet.TrainConfig(grad="backprop", hidden=8, epochs=2, seed=seed)
    config = SweepConfig(train=train, trials=trials).checked()
    start = time.perf_counter()
    result = sweep(config, client=client, log=None, progress=False)
    on_cluster = time.perf_counter() - start
    from dataclasses import asdict

    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    data = _split(config)
    settings = asdict(config.train)
    with threadpool_limits(1):  # as the workers run
        sequential = [_trial(settings, data, i, *trial_values(config, i)) for i in range(trials)]
    one_by_one = time.perf_counter() - start
    same = [r["val_acc"] for r in result["trials"]] == [r["val_acc"] for r in sequential]
    return {
        "trials": trials,
        "cluster_s": on_cluster,
        "sequential_s": one_by_one,
        "speedup": one_by_one / on_cluster,
        "same_val_acc": same,
        "best_val_acc": max((r["val_acc"] or 0.0) for r in result["trials"]),
        "workers": sorted({r["worker"] for r in result["trials"]}),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    from xpnet.cluster import connect

    show = not args.no_progress and sys.stderr.isatty()
    images = 64 if args.dry_run else args.images
    rounds = 1 if args.dry_run else args.rounds
    x, t, data_name = _images(images, args.dry_run)
    net = xpnet.TwoLayerNet(784, 50, 10, seed=args.seed)
    one, two = connect(workers=1), connect(workers=2)
    try:
        clients = {"this process": None, "1 worker": one, "2 workers": two}
        full, worst = _gradient(net, x, t, clients, rounds, show)
        overhead = _overhead(two, 2 if args.dry_run else args.overhead_rounds, show)
        trials = 2 if args.dry_run else args.trials
        sweep = _sweep(two, trials, args.seed, args.dry_run)
    finally:
        for client in (one, two):
            client.close()
            client.cluster.close()

    print(f"full-batch numerical gradient: {images} images ({data_name}), 784-50-10, structured")
    for name, row in full.items():
        print(
            f"  {name:<13} median {row['median_s']:.2f} s, min-max "
            f"{row['min_s']:.2f}-{row['max_s']:.2f} s (n={row['n']})"
        )
    print(f"  worst difference from this process's gradient: {worst:.1e} (max-norm, relative)")
    print("per-task overhead (4-3-2 net, 8 samples):")
    for name, row in overhead.items():
        extra = f", {row['per_task_s'] * 1e3:.1f} ms per task" if "tasks" in row else ""
        print(f"  {name:<13} median {row['median_s'] * 1e3:.1f} ms{extra}")
    print(
        f"sweep of {sweep['trials']} trials: {sweep['cluster_s']:.1f} s on 2 workers, "
        f"{sweep['sequential_s']:.1f} s one after another ({sweep['speedup']:.2f}x); "
        f"same validation accuracies: {sweep['same_val_acc']}"
    )
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    info = machine_info([("numpy", None)])
    save_json(
        Path(args.out),
        {
            "command": f"python scripts/bench_dask.py {argv_text}".strip(),
            "machine": info,
            "data": data_name,
            "images": images,
            "full_batch": full,
            "worst_relative_difference": worst,
            "overhead": overhead,
            "sweep": sweep,
        },
    )
    print(f"wrote {args.out}  ({info['cpu']}, {info['date']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
