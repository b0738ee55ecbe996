"""Time every numerical-gradient method against the book's loop, per backend.

The book's 784-50-10 net, a batch of 100, float64, on real Fashion-MNIST images
when Debian's dataset-fashion-mnist is installed (else MNIST-like synthetic
images with the same share of zeros). The loop is the 1.0x baseline, measured
in the same run on a sample of coordinates and extrapolated (it says so).
Prints a table and writes JSON.

    python scripts/bench_gradient.py --out bench-out/gradient.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness import machine_info, parse_backends  # scripts/harness.py
from tqdm.auto import tqdm

import xpnet
import xpnet.bench
from xpnet import book
from xpnet.bench import bench_methods, format_rows
from xpnet.io import save_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--backends",
        default="auto",
        help="comma-separated backend[:device] list, or auto (numpy, torch, cupy if present)",
    )
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="dtype")
    p.add_argument("--hidden", type=int, default=50, help="hidden units")
    p.add_argument("--batch-size", type=int, default=100, help="samples per gradient")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per method (median)")
    p.add_argument(
        "--batched-repeats",
        type=int,
        default=3,
        help="timed repeats for the batched method (slow on a CPU)",
    )
    p.add_argument(
        "--loop-sample",
        type=int,
        default=500,
        help="loop coordinates timed for the extrapolated baseline",
    )
    p.add_argument(
        "--methods",
        default="structured,complex,batched,backprop",
        help="methods to time besides the loop",
    )
    p.add_argument(
        "--data",
        choices=("auto", "fashion-mnist", "synthetic"),
        default="auto",
        help="input images",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of weights and synthetic data")
    p.add_argument("--out", default="bench-out/gradient.json", help="JSON output")
    p.add_argument(
        "--dry-run", action="store_true", help="tiny sizes, one repeat: checks the script"
    )
    return p.parse_args(argv)


def _data(kind, batch):
    if kind in ("auto", "fashion-mnist"):
        try:
            (x, t), _ = xpnet.datasets.load_fashion_mnist()
            return (x[:batch].astype("float64"), t[:batch]), "fashion-mnist"
        except xpnet.datasets.DataNotFoundError:
            if kind == "fashion-mnist":
                raise
    return None, "synthetic (MNIST-like zeros)"


def book_loop_seconds(sizes, data, seed, sample):
    """The book's own loop (:mod:`xpnet.book`: ch. 4 ``numerical_gradient`` with
    the book's ``TwoLayerNet.loss``, plain NumPy, in place, one BLAS thread),
    timed on ``sample`` coordinates and extrapolated: the baseline a reader of
    the book actually has."""
    import numpy as np

    x, t = data
    net = xpnet.TwoLayerNet(*sizes, seed=seed)
    params = {k: np.array(xpnet.to_numpy(v)) for k, v in net.params.items()}
    return book.loop_seconds(params, "sigmoid", x, t, sample)


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = (784, args.hidden, 10)
    repeats, sample = args.repeats, args.loop_sample
    if args.dry_run:
        sizes, repeats, sample = (36, 5, 10), 1, 10
    data, data_name = _data(args.data, args.batch_size)
    if args.dry_run:
        data, data_name = None, "synthetic (dry run)"
    backends = parse_backends(args.backends)
    host = (
        data
        if data is not None
        else xpnet.bench.mnist_like_batch(args.batch_size, sizes[0], sizes[2], seed=args.seed)
    )
    book_s, book_n = book_loop_seconds(sizes, host, args.seed, sample)
    rows = []
    for name, device in tqdm(backends, desc="backends", disable=not sys.stderr.isatty()):
        methods = args.methods.split(",")
        fast = tuple(m for m in methods if m != "batched")
        common = dict(
            backend=name,
            device=device,
            dtype=args.dtype,
            sizes=sizes,
            batch=args.batch_size,
            loop_sample=sample,
            seed=args.seed,
            data=data,
        )
        got = bench_methods(**common, repeats=repeats, methods=fast)
        if "batched" in methods:
            repeats_batched = 1 if args.dry_run else args.batched_repeats
            batched = bench_methods(**common, repeats=repeats_batched, methods=("batched",))
            for row in batched[1:]:  # drop its second loop measurement; one baseline
                if "median_s" in row:
                    row["speedup"] = got[0]["median_s"] / row["median_s"]
                got.append(row)
        rows += got
    print(
        f"gradient of a {sizes[0]}-{sizes[1]}-{sizes[2]} net, batch {args.batch_size}, "
        f"{args.dtype}, data: {data_name}"
    )
    print(format_rows(rows))
    print(
        f"the book's own loop (plain NumPy, in place): {book_s:.2f} s per gradient, "
        f"extrapolated from {book_n} timed coordinates; structured vs it: "
        + ", ".join(
            f"{r['backend']}:{r['device']} {book_s / r['median_s']:.0f}x"
            for r in rows
            if r["method"] == "structured" and "median_s" in r
        )
    )
    info = machine_info(backends)
    out = {
        "command": "python scripts/bench_gradient.py " + " ".join(argv or sys.argv[1:]),
        "machine": info,
        "data": data_name,
        "rows": rows,
        "book_loop": {"seconds": book_s, "timed_coordinates": book_n},
    }
    save_json(Path(args.out), json.loads(json.dumps(out, default=str)))
    print(f"wrote {args.out}  ({info['cpu']}, {info['date']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
