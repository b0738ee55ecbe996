"""The book's 784-50-10 default numerical gradient: this checkout against an older one.

Each side runs in its own child process (both are packages named ``xpnet``),
alternating ``--rounds`` times, each child timing ``--repeats`` gradients after a
warm-up, on the first 100 Fashion-MNIST images (synthetic MNIST-like without
them). Prints medians and min-max and writes JSON.

    git worktree add /tmp/xpnet-before 49c1adf
    OPENBLAS_NUM_THREADS=1 python scripts/bench_before_after.py --baseline-src /tmp/xpnet-before
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from harness import machine_info  # scripts/harness.py

import xpnet
from xpnet.bench import mnist_like_batch
from xpnet.io import save_json

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import json, sys, time
import numpy as np, xpnet
batch = np.load(sys.argv[3])
x, t = batch["x"], batch["t"]
net = xpnet.TwoLayerNet(784, 50, 10, seed=int(sys.argv[2]))
net.numerical_gradient(x, t)
times = []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    net.numerical_gradient(x, t)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--baseline-src", required=True, help="older xpnet checkout (a directory)")
    p.add_argument("--rounds", type=int, default=4, help="alternations of the two sides")
    p.add_argument("--repeats", type=int, default=7, help="timed gradients per child")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights")
    p.add_argument("--out", default="bench-out/before-after.json", help="JSON output")
    return p.parse_args(argv)


def _batch(path: Path) -> Path:
    """The 100-image batch both sides time, written once for the children (the
    baseline has no say in the data)."""
    try:
        (x, t), _ = xpnet.load_fashion_mnist()
        x, t = x[:100].astype("float64"), t[:100]
    except xpnet.datasets.DataNotFoundError:
        x, t = mnist_like_batch(100, 784, 10)
    np.savez(path, x=x, t=t)
    return path


def _child(source: str, repeats: int, seed: int, batch: Path) -> list[float]:
    env = dict(os.environ, PYTHONPATH=source)
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(repeats), str(seed), str(batch)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not Path(args.baseline_src, "xpnet").is_dir():
        print(f"bench_before_after: no xpnet package in {args.baseline_src}", file=sys.stderr)
        return 2
    sides = {"before": args.baseline_src, "now": str(ROOT)}
    times = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as scratch:
        batch = _batch(Path(scratch) / "batch.npz")
        for _ in range(args.rounds):
            for name, source in sides.items():
                times[name] += _child(source, args.repeats, args.seed, batch)
    rows = []
    for name, values in times.items():
        row = {
            "side": name,
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
            "n": len(values),
        }
        rows.append(row)
        print(
            f"{name:<7} median {row['median_s'] * 1e3:.1f} ms, "
            f"min-max {row['min_s'] * 1e3:.1f}-{row['max_s'] * 1e3:.1f} ms (n={row['n']})"
        )
    info = machine_info([("numpy", None)])
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    out = {
        "command": f"python scripts/bench_before_after.py {argv_text}",
        "machine": info,
        "rows": rows,
    }
    save_json(Path(args.out), out)
    print(f"wrote {args.out}  (BLAS threads: {info['blas_threads']}, {info['date']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
