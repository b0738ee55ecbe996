"""glibc's malloc settings and the numerical gradient on one thread.

xpnet raises glibc's mmap and trim thresholds
(:func:`xpnet.device.tune_host_allocator`) where it runs sample blocks on
several threads, and in every helper process, so that freed arrays are kept
for the next chunk instead of being unmapped (interrupting the other cores)
and faulted in again. Does one thread gain from it too? The settings are
process-wide and cannot be undone, so each measurement is a fresh process:
rounds alternate a process with the settings and one with
``XPNET_TUNE_MALLOC=0`` (glibc's own), each timing ``--repeats`` structured
gradients on one thread (after one warm-up) and reporting their median.

The batch reaches each timing process as a small file, as a user's batch
would be at hand: loading the whole dataset there and freeing it raised
glibc's own mmap threshold (a freed mapping raises it), which made the two
settings look alike (until 2026-12-03 this script did that).

    python scripts/bench_malloc.py --out bench-out/malloc.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_depth import NETS, load_batch  # scripts/bench_depth.py: the same nets and data
from harness import machine_info  # scripts/harness.py
from tqdm.auto import tqdm

import xpnet
from xpnet.device import ALLOCATOR_VARIABLE, tune_host_allocator
from xpnet.io import save_json

SETTINGS = {"tuned (xpnet's default)": "1", "glibc's own (XPNET_TUNE_MALLOC=0)": "0"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--nets", default=",".join(NETS), help="networks to time (comma-separated)")
    p.add_argument("--rounds", type=int, default=5, help="fresh processes per setting and net")
    p.add_argument("--repeats", type=int, default=7, help="gradients timed per process")
    p.add_argument("--seed", type=int, default=0, help="seed of weights")
    p.add_argument("--out", default="bench-out/malloc.json", help="JSON output")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, one round")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one timing process
    p.add_argument("--batch-file", default=None, help=argparse.SUPPRESS)  # the child's batch
    return p.parse_args(argv)


def _child(args) -> int:
    """In a fresh process: the median of ``--repeats`` one-thread gradients (s)."""
    sizes, activation, batch = NETS[args.child]
    if args.dry_run:
        sizes, batch = (36, *(max(3, s // 20) for s in sizes[1:-1]), 10), 8
    with np.load(args.batch_file) as saved:  # host: the parent's batch, nothing more
        x, t = saved["x"][:batch], saved["t"][:batch]
    net = xpnet.MultiLayerNet(
        sizes[0], list(sizes[1:-1]), sizes[-1], activation, 0.01, seed=args.seed
    )
    x = x[:, : sizes[0]]
    tune_host_allocator()  # a no-op under XPNET_TUNE_MALLOC=0
    net.numerical_gradient(x, t, n_threads=1)  # warm-up
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        net.numerical_gradient(x, t, n_threads=1)
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"median_s": statistics.median(seconds)}))
    return 0


def _in_fresh_process(name, setting, args) -> float:
    command = [sys.executable, __file__, "--child", name, "--repeats", str(args.repeats)]
    command += ["--seed", str(args.seed), "--batch-file", args.batch_file]
    command += ["--dry-run"] if args.dry_run else []
    env = {**os.environ, ALLOCATOR_VARIABLE: setting, "XPNET_PARALLEL": "threads"}
    for variable in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(variable, None)  # glibc's own variables would override both settings
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the timing process for {name!r} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])["median_s"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return _child(args)
    names = [n.strip() for n in args.nets.split(",")]
    unknown = set(names) - set(NETS)
    if unknown:
        print(f"bench_malloc: unknown nets {sorted(unknown)}; known: {list(NETS)}", file=sys.stderr)
        return 2
    rounds = 1 if args.dry_run else args.rounds
    times = {(name, label): [] for name in names for label in SETTINGS}
    progress = not args.no_progress and sys.stderr.isatty()
    largest = max(NETS[name][2] for name in names)
    x, t, data = load_batch(largest, max(NETS[name][0][0] for name in names), args.dry_run)
    with tempfile.TemporaryDirectory() as scratch:
        args.batch_file = str(Path(scratch) / "batch.npz")
        np.savez(args.batch_file, x=x, t=t)  # host
        for _ in tqdm(range(rounds), desc="rounds", disable=not progress):
            for name in names:
                for label, setting in SETTINGS.items():  # interleaved, round by round
                    times[(name, label)].append(_in_fresh_process(name, setting, args))
    rows = []
    print(f"{'net':<26} {'malloc':<34} {'median':>9} {'min-max':>17} {'vs tuned':>9}")
    for name in names:
        tuned = statistics.median(times[(name, next(iter(SETTINGS)))])
        for label in SETTINGS:
            values = times[(name, label)]
            median = statistics.median(values)
            rows.append(
                {"net": name, "malloc": label, "median_s": median, "min_s": min(values),
                 "max_s": max(values), "vs_tuned": median / tuned, "per_round_s": values}
            )  # fmt: skip
            spread = f"{min(values) * 1e3:.1f}-{max(values) * 1e3:.1f} ms"
            print(
                f"{name:<26} {label:<34} {median * 1e3:7.1f}ms {spread:>17} {median / tuned:8.2f}x"
            )
    info = machine_info([("numpy", None)])
    out = {
        "command": "python scripts/bench_malloc.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": info,
        "threads": 1,
        "data": data,
        "rounds": rounds,
        "repeats": args.repeats,
        "rows": rows,
    }
    save_json(Path(args.out), out)
    print(f"wrote {args.out}  ({info['cpu']}, {info['date']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
