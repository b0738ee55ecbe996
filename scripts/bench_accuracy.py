"""Accuracy of each numerical-gradient method, dtype and step.

Against the exact float64 gradient of the book's loss (including the +1e-7
inside the log, derived analytically), for the 784-50-10 net on a batch of
real Fashion-MNIST images (or MNIST-like synthetic ones): the normwise relative
error per parameter, and the median and 99th percentile of the per-coordinate
error |n - a| / max(|n|, |a|) over all 39,760 coordinates. Prints a table and
writes JSON.

    python scripts/bench_accuracy.py --out bench-out/accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
from harness import machine_info  # scripts/harness.py

import xpnet
from xpnet.bench import mnist_like_batch
from xpnet.io import save_json

CASES = [  # (method, dtype, h): h=None is the dtype's default
    ("structured", "float64", None),
    ("structured", "float64", 6e-6),
    ("structured", "float64", 1e-2),
    ("complex", "float64", None),
    ("structured", "float32", None),
    ("structured", "float32", 5e-3),
    ("structured", "float32", 1e-4),
    ("complex", "float32", None),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--backend", default="numpy", help="backend")
    p.add_argument("--batch-size", type=int, default=100, help="samples")
    p.add_argument("--hidden", type=int, default=50, help="hidden units")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights")
    p.add_argument("--out", default="bench-out/accuracy.json", help="JSON output")
    p.add_argument("--dry-run", action="store_true", help="small net, synthetic data")
    return p.parse_args(argv)


def exact_gradient(params, x, t):
    """Analytic gradient of -mean(log(y_t + 1e-7)) for the sigmoid net (float64)."""
    a1 = x @ params["W1"] + params["b1"]
    z1 = 1 / (1 + np.exp(-a1))
    a2 = z1 @ params["W2"] + params["b2"]
    y = np.exp(a2 - a2.max(1, keepdims=True))
    y /= y.sum(1, keepdims=True)
    n = len(t)
    y_t = y[np.arange(n), t][:, None]
    da2 = -(y_t / (y_t + 1e-7)) * (np.eye(y.shape[1])[t] - y) / n
    da1 = (da2 @ params["W2"].T) * z1 * (1 - z1)
    return {"W1": x.T @ da1, "b1": da1.sum(0), "W2": z1.T @ da2, "b2": da2.sum(0)}


def main(argv=None) -> int:
    args = parse_args(argv)
    d, h = (784, args.hidden) if not args.dry_run else (36, 6)
    data_name = "synthetic"
    x, t = mnist_like_batch(args.batch_size, d, seed=1)
    if not args.dry_run:
        try:
            (xs, ts), _ = xpnet.load_fashion_mnist()
            x, t, data_name = (
                xs[: args.batch_size].astype(np.float64),
                ts[: args.batch_size],
                "fashion-mnist",
            )
        except xpnet.datasets.DataNotFoundError:
            pass
    rows = []
    for method, dtype, step in CASES:
        net = xpnet.TwoLayerNet(d, h, 10, backend=args.backend, dtype=dtype, seed=args.seed)
        host = {k: xpnet.to_numpy(v).astype(np.float64) for k, v in net.params.items()}
        exact = exact_gradient(host, x, t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # h=1e-4 in float32 is measured on purpose
            got = net.numerical_gradient(x, t, method=method, h=step)
        got = {k: xpnet.to_numpy(v).astype(np.float64) for k, v in got.items()}
        flat_n = np.concatenate([got[k].ravel() for k in exact])
        flat_a = np.concatenate([exact[k].ravel() for k in exact])
        scale = np.maximum(np.abs(flat_n), np.abs(flat_a))
        coord = np.abs(flat_n - flat_a)[scale > 0] / scale[scale > 0]
        used = (
            step
            if step is not None
            else (1e-20 if method == "complex" else xpnet.default_step(net.dtype, net.xp))
        )
        rows.append(
            {
                "method": method,
                "dtype": dtype,
                "h": used,
                "default_h": step is None,
                "normwise": {
                    k: float(np.linalg.norm(got[k] - exact[k]) / np.linalg.norm(exact[k]))
                    for k in exact
                },
                "median_coord": float(np.median(coord)),
                "p99_coord": float(np.quantile(coord, 0.99)),
            }
        )
    print(
        f"{d}-{h}-10 net, batch {args.batch_size} ({data_name}), vs exact float64 gradient (with +1e-7)"
    )
    print(
        f"{'method':<11} {'dtype':<8} {'h':>8} {'W1 normwise':>12} {'worst normwise':>15} {'median coord':>13} {'p99 coord':>10}"
    )
    for r in rows:
        worst = max(r["normwise"].values())
        tag = f"{r['h']:.0e}" + ("*" if r["default_h"] else "")
        print(
            f"{r['method']:<11} {r['dtype']:<8} {tag:>8} {r['normwise']['W1']:>12.1e} {worst:>15.1e} "
            f"{r['median_coord']:>13.1e} {r['p99_coord']:>10.1e}"
        )
    print("(* the dtype's default step)")
    command = "python scripts/bench_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    save_json(
        Path(args.out),
        json.loads(
            json.dumps(
                {
                    "command": command,
                    "machine": machine_info([(args.backend, None)]),
                    "data": data_name,
                    "rows": rows,
                }
            )
        ),
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
