"""The default numerical gradient of the benchmark nets: this checkout against an older one.

Each side runs in its own child process (both are packages named ``xpnet``),
alternating ``--rounds`` times, each child timing ``--repeats`` gradients of every
net after a warm-up, on the first 100 Fashion-MNIST images (128 for the Keras
net; synthetic MNIST-like without them). Both sides run with their own defaults
(threads included). Prints medians and min-max and writes JSON.

    git worktree add /tmp/xpnet-before 49c1adf
    OPENBLAS_NUM_THREADS=1 python scripts/bench_before_after.py --baseline-src /tmp/xpnet-before

With ``--paired N`` the two sides instead run in two children kept for a
round, one gradient at a time in turn (which side goes first alternates), ``N``
times per net and round: on a machine whose speed drifts by the minute, each
gradient's neighbour on the other side ran under the same load, so the median
of the pairs' differences (now - before) and the share of pairs where now is
faster are what to read; the sides' own medians and min-max are printed too.
Each round starts new children: one process can run a few percent faster than
another of the same code for its whole life (seen here with both sides the
same checkout: 41 and 46 of 60 pairs one way), so take several rounds.
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

NETS = {
    # name: (hidden sizes, activation, batch)
    "784-50-10 sigmoid (book)": ([50], "sigmoid", 100),
    "784-100-100-10 relu": ([100, 100], "relu", 100),
    "784-100-100-10 sigmoid": ([100, 100], "sigmoid", 100),
    "784-512-10 relu (Keras)": ([512], "relu", 128),
}

# a child: argv repeats (0: paired), seed, batch, nets (JSON), its xpnet's source
_CHILD = """
import json, sys, time
import numpy as np, xpnet
assert xpnet.__file__.startswith(sys.argv[5]), (xpnet.__file__, sys.argv[5])
repeats, seed, nets = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[4])
batch = np.load(sys.argv[3])
try:  # the default's helper processes, ready before timing (older code has none)
    from xpnet import procs
    from xpnet.device import host_threads
    procs.helpers(host_threads() - 1, wait=True)
except ImportError:
    pass
made = {}
for name, (hidden, activation, n) in nets.items():
    x, t = batch["x"][:n], batch["t"][:n]
    net = xpnet.MultiLayerNet(784, hidden, 10, activation, 0.01, seed=seed)
    net.numerical_gradient(x, t)
    made[name] = (net, x, t)

def timed(name):
    net, x, t = made[name]
    start = time.perf_counter()
    net.numerical_gradient(x, t)
    return time.perf_counter() - start

if repeats:
    print(json.dumps({name: [timed(name) for _ in range(repeats)] for name in made}))
else:  # paired: one gradient of the net named on each line of stdin
    print("ready", flush=True)
    for line in sys.stdin:
        print(timed(line.strip()), flush=True)
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--baseline-src", required=True, help="older xpnet checkout (a directory)")
    p.add_argument("--rounds", type=int, default=4, help="alternations of the two sides")
    p.add_argument("--repeats", type=int, default=7, help="timed gradients per child")
    p.add_argument(
        "--paired",
        type=int,
        default=0,
        help="instead: this many gradients per side, net and round, one at a time in "
        "turn, in two children kept for the round (0: children timing --repeats each)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights")
    p.add_argument("--nets", default=",".join(NETS), help="networks to time (comma-separated)")
    p.add_argument("--out", default="bench-out/before-after.json", help="JSON output")
    return p.parse_args(argv)


def _batch(path: Path) -> Path:
    """The 100-image batch both sides time, written once for the children (the
    baseline has no say in the data)."""
    try:
        (x, t), _ = xpnet.load_fashion_mnist()
        x, t = x[:128].astype("float64"), t[:128]
    except xpnet.datasets.DataNotFoundError:
        x, t = mnist_like_batch(128, 784, 10)
    np.savez(path, x=x, t=t)
    return path


def _command(source: str, repeats: int, seed: int, batch: Path, nets: dict) -> dict:
    """The child's command line and where it runs: from the batch's scratch
    directory (``python -c`` puts the working directory first on sys.path, and
    from a checkout that is its own xpnet)."""
    argv = [sys.executable, "-c", _CHILD, str(repeats), str(seed), str(batch), json.dumps(nets)]
    return {
        "args": [*argv, source],
        "cwd": batch.parent,
        "env": dict(os.environ, PYTHONPATH=source),
    }


def _child(source: str, repeats: int, seed: int, batch: Path, nets: dict) -> dict:
    command = _command(source, repeats, seed, batch, nets)
    result = subprocess.run(**command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def _paired(sides: dict, count: int, seed: int, batch: Path, nets: dict) -> dict:
    """``count`` gradients per side and net, one at a time in turn (the side that
    goes first alternates), in one kept child per side."""
    times: dict = {(side, net): [] for side in sides for net in nets}
    children = {
        side: subprocess.Popen(
            **_command(source, 0, seed, batch, nets),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for side, source in sides.items()
    }
    try:
        for side, child in children.items():
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the {side} side's child did not start")
        order = list(sides)
        for k in range(count):
            for net in nets:
                for side in order if k % 2 == 0 else order[::-1]:
                    children[side].stdin.write(net + "\n")
                    children[side].stdin.flush()
                    times[(side, net)].append(float(children[side].stdout.readline()))
    finally:
        for child in children.values():
            child.stdin.close()  # a child ends at the end of its input
            child.wait()
            child.stdout.close()
    return times


def _pair_rows(times: dict, nets: dict) -> list[dict]:
    """Per net, the median of the pairs' differences (now - before) and the share
    of pairs where now was faster; printed."""
    rows = []
    for net in nets:
        diffs = [a - b for a, b in zip(times[("now", net)], times[("before", net)], strict=True)]
        faster = sum(d < 0 for d in diffs)
        row = {
            "net": net,
            "side": "now - before (paired)",
            "median_diff_s": statistics.median(diffs),
            "now_faster": faster / len(diffs),
            "n": len(diffs),
        }
        rows.append(row)
        print(
            f"{net:<26} paired: now - before median {row['median_diff_s'] * 1e3:+.2f} ms, "
            f"now faster in {faster} of {len(diffs)} pairs"
        )
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if not Path(args.baseline_src, "xpnet").is_dir():
        print(f"bench_before_after: no xpnet package in {args.baseline_src}", file=sys.stderr)
        return 2
    sides = {"before": str(Path(args.baseline_src).resolve()), "now": str(ROOT)}
    nets = {name.strip(): NETS[name.strip()] for name in args.nets.split(",")}
    times = {(side, net): [] for side in sides for net in nets}
    with tempfile.TemporaryDirectory() as scratch:
        batch = _batch(Path(scratch) / "batch.npz")
        for _ in range(args.rounds):
            if args.paired > 0:
                for key, values in _paired(sides, args.paired, args.seed, batch, nets).items():
                    times[key] += values
                continue
            for side, source in sides.items():
                for net, values in _child(source, args.repeats, args.seed, batch, nets).items():
                    times[(side, net)] += values
    rows = []
    for (side, net), values in times.items():
        row = {
            "net": net,
            "side": side,
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
            "n": len(values),
        }
        rows.append(row)
        print(
            f"{net:<26} {side:<7} median {row['median_s'] * 1e3:8.1f} ms, "
            f"min-max {row['min_s'] * 1e3:.1f}-{row['max_s'] * 1e3:.1f} ms (n={row['n']})"
        )
    if args.paired > 0:
        rows += _pair_rows(times, nets)
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
