"""Numerical gradient of networks of any depth: structured vs the one-weight loop.

For each network, in one run: xpnet's loop (``method="loop"``, timed on a sample
of coordinates and extrapolated: every coordinate costs two whole forward
passes), then the default numerical gradient (``structured``), the complex step
and backprop, repeated and interleaved across networks so machine load hits
them alike. With ``--baseline-src DIR`` (an older checkout of xpnet) the
two-layer net's default gradient is also timed with that code, in a child
process, interleaved with this code's: the before/after comparison.

    python scripts/bench_depth.py --out bench-out/depth.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from harness import machine_info  # scripts/harness.py
from tqdm.auto import tqdm

import xpnet
import xpnet.bench
from xpnet.io import save_json

NETS = {
    # name: (sizes, activation, batch)
    "784-100-100-10 relu": ((784, 100, 100, 10), "relu", 100),
    "784-100-100-10 sigmoid": ((784, 100, 100, 10), "sigmoid", 100),
    "784-512-10 relu (Keras)": ((784, 512, 10), "relu", 128),
    "784-50-10 sigmoid (book)": ((784, 50, 10), "sigmoid", 100),
}

_CHILD = """
import json, sys, time
import numpy as np, xpnet
x = np.load(sys.argv[1]); t = np.load(sys.argv[2])
net = xpnet.TwoLayerNet(784, 50, 10, seed=int(sys.argv[4]))
net.numerical_gradient(x, t)
times = []
for _ in range(int(sys.argv[3])):
    s = time.perf_counter(); net.numerical_gradient(x, t); times.append(time.perf_counter() - s)
print(json.dumps({"times": times, "file": xpnet.__file__}))
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--nets", default=",".join(NETS), help="networks to time (comma-separated)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median over them)")
    p.add_argument(
        "--loop-sample", type=int, default=200, help="loop coordinates timed per network"
    )
    p.add_argument("--methods", default="structured,complex,backprop", help="methods to time")
    p.add_argument("--baseline-src", default=None, help="older xpnet checkout for before/after")
    p.add_argument("--seed", type=int, default=0, help="seed of weights")
    p.add_argument("--out", default="bench-out/depth.json", help="JSON output")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, one round")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _data(batch, d, dry):
    if not dry:
        try:
            (x, t), _ = xpnet.load_fashion_mnist()
            return x[:batch].astype("float64"), t[:batch], "fashion-mnist"
        except xpnet.datasets.DataNotFoundError:
            pass
    x, t = xpnet.bench.mnist_like_batch(batch, d, 10, seed=0)
    return x, t, "synthetic (MNIST-like)"


def _loop_seconds(net, x, t, sample):
    """Seconds of the whole loop, extrapolated from ``sample`` coordinates of b1."""
    xs, ts = net._batch(x, t)
    params = net._params()
    b1 = net.xp.asarray(params["b1"], copy=True)

    def f(w):
        return net.loss_batched(xs, ts, "b1", w[None, ...], params=params)[0]

    done, start = 0, time.perf_counter()
    while done < sample:
        xpnet.numerical_gradient(f, b1)
        done += b1.shape[0]
    per = (time.perf_counter() - start) / done
    return per * sum(int(np.prod(v.shape)) for v in params.values()), done


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info

        return [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return "unknown"


def main(argv=None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.nets.split(",")]
    unknown = set(names) - set(NETS)
    if unknown:
        print(f"bench_depth: unknown nets {sorted(unknown)}; known: {list(NETS)}", file=sys.stderr)
        return 2
    methods = args.methods.split(",")
    rounds, sample = (1, 4) if args.dry_run else (args.rounds, args.loop_sample)
    setups = {}
    for name in names:
        sizes, activation, batch = NETS[name]
        if args.dry_run:
            sizes, batch = (36, *(max(3, s // 20) for s in sizes[1:-1]), 10), 8
        x, t, data_name = _data(batch, sizes[0], args.dry_run)
        if len(sizes) == 3 and activation == "sigmoid":
            net = xpnet.TwoLayerNet(sizes[0], sizes[1], sizes[2], seed=args.seed)
        else:
            net = xpnet.MultiLayerNet(
                sizes[0], list(sizes[1:-1]), sizes[-1], activation, 0.01, seed=args.seed
            )
        setups[name] = (net, x[:, : sizes[0]], t, data_name)

    progress = not args.no_progress and sys.stderr.isatty()
    loops = {}
    for name in tqdm(names, desc="loops", disable=not progress):
        net, x, t, _ = setups[name]
        loops[name] = _loop_seconds(net, x, t, sample)

    def call(net, x, t, method):
        if method == "backprop":
            return net.gradient(x, t)
        return net.numerical_gradient(x, t, method=method)

    times = {(n, m): [] for n in names for m in methods}
    baseline = []
    child_inputs = None
    if args.baseline_src and "784-50-10 sigmoid (book)" in names:
        import tempfile

        tmp = Path(tempfile.mkdtemp())
        _, x, t, _ = setups["784-50-10 sigmoid (book)"]
        np.save(tmp / "x.npy", x)
        np.save(tmp / "t.npy", t)
        child_inputs = (str(tmp / "x.npy"), str(tmp / "t.npy"))
    for name in names:  # warm-up
        net, x, t, _ = setups[name]
        for method in methods:
            call(net, x, t, method)
    for _ in tqdm(range(rounds), desc="rounds", disable=not progress):
        for name in names:
            net, x, t, _ = setups[name]
            for method in methods:
                start = time.perf_counter()
                call(net, x, t, method)
                times[(name, method)].append(time.perf_counter() - start)
        if child_inputs is not None:
            env = dict(os.environ, PYTHONPATH=args.baseline_src)
            result = subprocess.run(
                [sys.executable, "-c", _CHILD, *child_inputs, "1", str(args.seed)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            baseline += json.loads(result.stdout)["times"]

    rows = []
    for name in names:
        loop_s, timed = loops[name]
        rows.append(
            {
                "net": name,
                "method": "loop",
                "median_s": loop_s,
                "note": f"extrapolated from {timed} coordinates",
            }
        )
        for method in methods:
            ts = times[(name, method)]
            median = statistics.median(ts)
            rows.append(
                {
                    "net": name,
                    "method": method,
                    "median_s": median,
                    "min_s": min(ts),
                    "max_s": max(ts),
                    "vs_loop": loop_s / median,
                }
            )
    if baseline:
        rows.append(
            {
                "net": "784-50-10 sigmoid (book)",
                "method": "structured, before (baseline-src)",
                "median_s": statistics.median(baseline),
                "min_s": min(baseline),
                "max_s": max(baseline),
                "vs_loop": loops["784-50-10 sigmoid (book)"][0] / statistics.median(baseline),
            }
        )
    print(f"{'net':<26} {'method':<34} {'median':>10} {'min-max':>20} {'vs loop':>8}")
    for r in rows:
        span = (
            f"{r['min_s'] * 1e3:.1f}-{r['max_s'] * 1e3:.1f} ms"
            if "min_s" in r
            else r.get("note", "")
        )
        ratio = f"{r['vs_loop']:.0f}x" if "vs_loop" in r else "1x"
        print(
            f"{r['net']:<26} {r['method']:<34} {r['median_s'] * 1e3:>8.1f}ms {span:>20} {ratio:>8}"
        )
    info = machine_info([("numpy", None)])
    info["blas_threads"] = _blas_threads()
    info["OPENBLAS_NUM_THREADS"] = os.environ.get("OPENBLAS_NUM_THREADS")
    print(
        f"BLAS threads: {info['blas_threads']} (OPENBLAS_NUM_THREADS={info['OPENBLAS_NUM_THREADS']})"
    )
    out = {
        "command": "python scripts/bench_depth.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": info,
        "data": sorted({s[3] for s in setups.values()}),
        "rounds": rounds,
        "rows": rows,
    }
    save_json(Path(args.out), json.loads(json.dumps(out, default=str)))
    print(f"wrote {args.out}  ({info['cpu']}, {info['date']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
