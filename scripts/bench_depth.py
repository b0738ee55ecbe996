"""Numerical gradient of networks of any depth: xpnet against the book's loop.

For each network, in one run, interleaved round by round so that machine load
hits them alike: the book's loop as the book writes it (plain NumPy, one BLAS
thread; :mod:`xpnet.book`, timed on a sample of ``W1`` coordinates and
extrapolated: every coordinate costs the same two forward passes), xpnet's
default numerical gradient on one thread and on every core (helper processes,
the default, and threads), the complex step
and backprop (each ``--repeats`` times per round, interleaved; the round takes
their median). Each round also measures the machine's parallel ceiling (N
processes of a fixed NumPy kernel at once vs one), which the speed-ups on every
core are reported against (``harness.share_of_ceiling``: not measured where
most rounds' speed-ups exceed their ceilings by more than the ceiling's own
spread).

    python scripts/bench_depth.py --out bench-out/depth.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from harness import (  # scripts/harness.py
    machine_info,
    on_threads,
    parallel_ceiling,
    share_of_ceiling,
)
from tqdm.auto import tqdm

import xpnet
import xpnet.bench
from xpnet import book
from xpnet.device import host_threads
from xpnet.io import save_json
from xpnet.timing import blas_threads

NETS = {
    # name: (sizes, activation, batch)
    "784-50-10 sigmoid (book)": ((784, 50, 10), "sigmoid", 100),
    "784-100-100-10 relu": ((784, 100, 100, 10), "relu", 100),
    "784-100-100-10 sigmoid": ((784, 100, 100, 10), "sigmoid", 100),
    "784-512-10 relu (Keras)": ((784, 512, 10), "relu", 128),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--nets", default=",".join(NETS), help="networks to time (comma-separated)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median over them)")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="gradients per method and round, interleaved (the round takes their median)",
    )
    p.add_argument(
        "--loop-sample", type=int, default=100, help="book-loop coordinates timed per round"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads of the all-cores rows (default: the cores this process may use)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of weights")
    p.add_argument("--out", default="bench-out/depth.json", help="JSON output")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, one round")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def load_batch(batch, d, dry):
    """The first ``batch`` Fashion-MNIST images (float64), their labels and the
    data's name; a synthetic MNIST-like batch without them or in a dry run."""
    if not dry:
        try:
            (x, t), _ = xpnet.load_fashion_mnist()
            return x[:batch].astype("float64"), t[:batch], "fashion-mnist"
        except xpnet.datasets.DataNotFoundError:
            pass
    x, t = xpnet.bench.mnist_like_batch(batch, d, 10, seed=0)
    return x, t, "synthetic (MNIST-like)"


def _setups(names, args):
    setups = {}
    for name in names:
        sizes, activation, batch = NETS[name]
        if args.dry_run:
            sizes, batch = (36, *(max(3, s // 20) for s in sizes[1:-1]), 10), 8
        x, t, data_name = load_batch(batch, sizes[0], args.dry_run)
        net = xpnet.MultiLayerNet(
            sizes[0], list(sizes[1:-1]), sizes[-1], activation, 0.01, seed=args.seed
        )
        setups[name] = (net, x[:, : sizes[0]], t, data_name)
    return setups


def _methods(threads):
    """(row label, call) of every timed xpnet method; the first three are the
    speed-up's: one thread, every core (the default: helper processes), and every
    core on threads."""
    return [
        ("structured, 1 thread", lambda n, x, t: n.numerical_gradient(x, t, n_threads=1)),
        (
            f"structured, {threads} cores (helper processes)",
            lambda n, x, t: n.numerical_gradient(x, t, n_threads=threads),
        ),
        (
            f"structured, {threads} threads",
            on_threads(lambda n, x, t: n.numerical_gradient(x, t, n_threads=threads)),
        ),
        (
            f"complex, {threads} cores",
            lambda n, x, t: n.numerical_gradient(x, t, method="complex", n_threads=threads),
        ),
        ("backprop", lambda n, x, t: n.gradient(x, t)),
    ]


def _rows(names, setups, loops, times, labels, ceilings, threads):
    rows = []
    for name in names:
        ceiling = statistics.median(c["processes"] for c in ceilings[name])
        net = setups[name][0]
        loop = statistics.median(s for s, _ in loops[name])
        rows.append(
            {
                "net": name,
                "method": "book loop (plain NumPy, 1 BLAS thread)",
                "median_s": loop,
                "min_s": min(s for s, _ in loops[name]),
                "max_s": max(s for s, _ in loops[name]),
                "note": f"extrapolated from {loops[name][0][1]} W1 coordinates per round",
                "parameters": sum(int(np.prod(v.shape)) for v in net.params.values()),
            }
        )
        for label in labels:
            ts = times[(name, label)]
            rows.append(
                {
                    "net": name,
                    "method": label,
                    "median_s": statistics.median(ts),
                    "min_s": min(ts),
                    "max_s": max(ts),
                    "vs_loop": loop / statistics.median(ts),
                }
            )
        one = times[(name, labels[0])]
        for many, kind in ((labels[1], "helper processes"), (labels[2], "threads")):
            # per round: the speed-up against that round's own ceiling (the load
            # of a shared VM changes from round to round; both measured within it)
            per_round = [c["processes"] for c in ceilings[name]]
            pairs = [p for c in ceilings[name] for p in c.get("processes_pairs", [])]
            share = share_of_ceiling(one, times[(name, many)], per_round, pairs)
            rows.append(
                {
                    "net": name,
                    "method": f"{kind} speed-up ({threads} vs 1)",
                    "speedup": statistics.median(one) / statistics.median(times[(name, many)]),
                    "ceiling": ceiling,
                    "share_of_ceiling": share["share"],
                    "share_per_round": share["per_round"],
                    "rounds_above_ceiling": share["rounds_above_ceiling"],
                    "ceiling_spread": share["ceiling_spread"],
                }
            )
    return rows


def _print(rows, ceilings):
    print(f"{'net':<26} {'method':<40} {'median':>10} {'min-max':>22} {'vs loop':>8}")
    for r in rows:
        if "speedup" in r:
            ceiling = f"ceiling {r['ceiling']:.2f}x"
            share = "n/a" if r["share_of_ceiling"] is None else f"{r['share_of_ceiling']:.0%}"
            n_above, n_rounds = r["rounds_above_ceiling"], len(r["share_per_round"])
            above = f" ({n_above} of {n_rounds} rounds above 1)" if n_above else ""
            if (r["share_of_ceiling"] or 0.0) > 1.0:  # at the ceiling, to within its spread
                above += f"; within the ceiling's spread of {r['ceiling_spread']:.0%}"
            print(
                f"{r['net']:<26} {r['method']:<40} {r['speedup']:>9.2f}x "
                f"{ceiling:>22} {share:>7}{above}"
            )
            continue
        span = f"{r['min_s'] * 1e3:.1f}-{r['max_s'] * 1e3:.1f} ms"
        ratio = f"{r['vs_loop']:,.0f}x" if "vs_loop" in r else "1x"
        print(
            f"{r['net']:<26} {r['method']:<40} {r['median_s'] * 1e3:>8.1f}ms {span:>22} {ratio:>8}"
        )
    print(
        "share of the ceiling: median over rounds of (speed-up / that round's ceiling); "
        "n/a where that median is above 1 by more than the ceiling's own spread "
        "(half its measurements' interquartile range; the ceiling's measurement failed); "
        "parallel ceiling per round (processes / threads of a fixed NumPy kernel): "
        + "; ".join(
            f"{name.split()[0]}: "
            + ", ".join(f"{c['processes']:.2f}x/{c['threads']:.2f}x" for c in per_net)
            for name, per_net in ceilings.items()
        )
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.nets.split(",")]
    unknown = set(names) - set(NETS)
    if unknown:
        print(f"bench_depth: unknown nets {sorted(unknown)}; known: {list(NETS)}", file=sys.stderr)
        return 2
    rounds, sample = (1, 4) if args.dry_run else (args.rounds, args.loop_sample)
    threads = host_threads(args.threads)
    setups = _setups(names, args)
    methods = _methods(threads)
    labels = [label for label, _ in methods]
    progress = not args.no_progress and sys.stderr.isatty()
    xpnet.procs.helpers(threads - 1, wait=True)  # started before any timing
    for name in names:  # warm-up
        net, x, t, _ = setups[name]
        for _, call in methods:
            call(net, x, t)
    loops = {name: [] for name in names}
    times = {(n, label): [] for n in names for label in labels}
    ceilings = {name: [] for name in names}
    for _ in tqdm(range(rounds), desc="rounds", disable=not progress):
        for name in names:
            net, x, t, _ = setups[name]
            # the ceiling right beside the timings it is compared with
            ceilings[name].append(parallel_ceiling(threads, repeats=20 if args.dry_run else 100))
            params = {k: xpnet.to_numpy(v) for k, v in net.params.items()}
            loops[name].append(book.loop_seconds(params, net.activation, x, t, sample))
            samples = {label: [] for label in labels}
            for _ in range(1 if args.dry_run else args.repeats):
                for label, call in methods:
                    start = time.perf_counter()
                    call(net, x, t)
                    samples[label].append(time.perf_counter() - start)
            for label in labels:
                times[(name, label)].append(statistics.median(samples[label]))
    rows = _rows(names, setups, loops, times, labels, ceilings, threads)
    _print(rows, ceilings)
    info = machine_info([("numpy", None)])
    print(f"BLAS threads outside the gradient: {blas_threads()}; xpnet runs one inside it")
    out = {
        "command": "python scripts/bench_depth.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": info,
        "threads": threads,
        "data": sorted({s[3] for s in setups.values()}),
        "rounds": rounds,
        "ceilings": ceilings,
        "rows": rows,
    }
    save_json(Path(args.out), json.loads(json.dumps(out, default=str)))
    print(f"wrote {args.out}  ({info['cpu']}, {info['date']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
