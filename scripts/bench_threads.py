"""Threads against processes on one network's numerical gradient: where the
threads' speed-up goes.

Per round, interleaved: xpnet on one thread (the whole batch); xpnet on N
threads; xpnet on N cores with its helper processes (the default,
:mod:`xpnet.procs`: the blocks' arrays through shared memory; on two cores a
net with one sigmoid hidden layer is one block shared by both,
:mod:`xpnet.shared_block`); the same split in sample blocks, one run per core
(that path turned off in this process for the call); N processes each computing the gradient of its 1/N of the batch at
once; and the same N shares one after another (what the processes are compared
with). The processes do the threads' work without sharing an interpreter (no
GIL between them, no shared address space). Also reported, per gradient on N
threads: the voluntary context switches (a thread that waits, mostly for the
GIL) and the CPU time, against one thread's (for the helper processes, the
calling process's own: the helpers' is not counted). Last, the granularity: N threads
and N processes running a fixed NumPy kernel whose operations take from a few
to a few hundred microseconds (threads gain only where an operation is long
enough to cover handing the GIL over to another thread), and the hand-off
itself: the round trip of two threads waking each other. And the kinds: the
ceiling of N processes for the ceiling's own kernel (an exp and a multiply on 4
MiB) beside that of a kernel that mostly moves memory (a multiply and an add)
on 4 MiB and on 512 KiB (what one core's L2 cache holds on Zen 3), interleaved:
how much of the machine two processes of streaming work can have.

    python scripts/bench_threads.py --net "784-50-10 sigmoid (book)" --out bench-out/threads.json

The processes are forked (Linux).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

from bench_depth import NETS, load_batch  # scripts/bench_depth.py
from harness import machine_info, on_threads, parallel_ceiling  # scripts/harness.py
from tqdm.auto import tqdm

import xpnet
import xpnet.shared_block
from xpnet.device import host_threads, tune_host_allocator
from xpnet.io import save_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--net", default="784-50-10 sigmoid (book)", help=f"one of {list(NETS)}")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median over them)")
    p.add_argument("--threads", type=int, default=None, help="N (default: the usable cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights")
    p.add_argument("--out", default="bench-out/threads.json", help="JSON output")
    p.add_argument("--dry-run", action="store_true", help="a tiny net, one round")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


class _Shares:
    """``n`` forked processes, each holding its share of the batch: one gradient
    per share on every call, all at once or one after another."""

    def __init__(self, net, x, t, n):
        batch = x.shape[0]
        context = multiprocessing.get_context("fork")
        self.commands = [context.Queue() for _ in range(n)]
        self.done = context.Queue()
        self.workers = []
        for k, queue in enumerate(self.commands):
            a, b = k * batch // n, (k + 1) * batch // n
            args = (net, x[a:b], t[a:b], queue, self.done)
            self.workers.append(context.Process(target=_serve, args=args, daemon=True))
        for worker in self.workers:
            worker.start()

    def together(self):
        for queue in self.commands:
            queue.put(True)
        for _ in self.commands:
            self.done.get()

    def one_after_another(self):
        for queue in self.commands:
            queue.put(True)
            self.done.get()

    def close(self):
        for queue in self.commands:
            queue.put(None)
        for worker in self.workers:
            worker.join(timeout=10)


def _serve(net, x, t, commands, done):
    """A forked process: one share's gradient per command, until None."""
    while commands.get() is not None:
        net.numerical_gradient(x, t, n_threads=1)
        done.put(True)


def _in_blocks(call):
    """``call`` with the shared block off (:func:`xpnet.shared_block.suits`):
    the gradient split in sample blocks, one run per core, as before it."""

    def split():
        suits = xpnet.shared_block.suits
        xpnet.shared_block.suits = lambda *args: False
        try:
            return call()
        finally:
            xpnet.shared_block.suits = suits

    return split


def _paired(default, blocks) -> dict:
    """Per round, the default's time over the sample blocks' (taken one right
    after the other): its median and quartiles, and the rounds it was faster."""
    ratios = [a / b for a, b in zip(default, blocks, strict=True)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    faster = sum(r < 1 for r in ratios)
    return {"median": statistics.median(ratios), "q1": q1, "q3": q3, "faster": faster}


def _usage():
    """(voluntary context switches, CPU seconds) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw, usage.ru_utime + usage.ru_stime


def _time(cases, rounds, counted, progress):
    """Per case, the seconds of each round (the cases in order, then in reverse,
    round by round); for the ``counted`` cases also the (switches, CPU seconds)
    each call took."""
    for call in cases.values():  # warm-up
        call()
    times = {label: [] for label in cases}
    usage = {label: [] for label in counted}
    for k in tqdm(range(rounds), desc="rounds", disable=not progress):
        # every other round in reverse: no case always follows the same one
        for label, call in list(cases.items())[:: -1 if k % 2 else 1]:
            before = _usage()
            start = time.perf_counter()
            call()
            times[label].append(time.perf_counter() - start)
            after = _usage()
            if label in usage:
                usage[label].append((after[0] - before[0], after[1] - before[1]))
    return times, usage


def _rows(times, usage):
    rows = []
    for label, values in times.items():
        row = {"method": label, "median_s": statistics.median(values)}
        row.update(min_s=min(values), max_s=max(values))
        if label in usage:
            row["switches"] = statistics.median(u[0] for u in usage[label])
            row["cpu_s"] = statistics.median(u[1] for u in usage[label])
        rows.append(row)
    return rows


def _print(rows, speedups, n):
    for r in rows:
        extra = ""
        if "switches" in r:
            extra = f"  switches {r['switches']:5.0f}  CPU {r['cpu_s'] * 1e3:7.1f} ms"
        print(
            f"{r['method']:34s} {r['median_s'] * 1e3:8.1f} ms "
            f"({r['min_s'] * 1e3:.1f}-{r['max_s'] * 1e3:.1f}){extra}"
        )
    print(
        f"speed-up: {n} threads {speedups['threads']:.2f}x one thread; xpnet's helper "
        f"processes {speedups['helper_processes']:.2f}x (in sample blocks "
        f"{speedups['sample_blocks']:.2f}x); {n} processes "
        f"{speedups['processes']:.2f}x the same shares one after another"
    )


#: elements per operation of the granularity kernel (8 bytes each)
GRANULARITY = (10_000, 30_000, 100_000, 300_000)


def _granularity(n, dry_run):
    """Per operation size: N threads and N processes against one, running the
    fixed kernel of :func:`harness.parallel_ceiling` (about 40 ms each)."""
    rows = []
    for elements in GRANULARITY[:1] if dry_run else GRANULARITY:
        repeats = 5 if dry_run else max(5, 20_000_000 // elements)
        runs = [parallel_ceiling(n, repeats, elements) for _ in range(1 if dry_run else 3)]
        row = {"elements": elements}
        row.update(
            {k: statistics.median(r[k] for r in runs) for k in ("op_us", "threads", "processes")}
        )
        rows.append(row)
        print(
            f"granularity: ops of {elements:>7,} elements ({row['op_us']:6.1f} us): "
            f"{n} threads {row['threads']:.2f}x, {n} processes {row['processes']:.2f}x"
        )
    return rows


#: (label, kernel kind, elements, repeats): about 0.1-0.3 s alone each
KINDS = (
    ("exp and multiply, 4 MiB (the ceiling's)", "exp", 2**19, 40),
    ("multiply and add, 4 MiB", "stream", 2**19, 80),
    ("multiply and add, 512 KiB", "stream", 2**16, 640),
)


def _kinds(n, dry_run):
    """Per kind of kernel (:data:`KINDS`): the median ceiling of N processes
    over 3 interleaved runs of 5 pairs each."""
    runs: dict = {label: [] for label, *_ in KINDS}
    for _ in range(1 if dry_run else 3):
        for label, kind, elements, repeats in KINDS:
            if dry_run:
                elements, repeats = 10_000, 3
            ceiling = parallel_ceiling(n, repeats, elements, pairs=3 if dry_run else 5, kind=kind)
            runs[label].append(ceiling["processes"])
    rows = []
    for label, kind, elements, _ in KINDS:
        median = statistics.median(runs[label])
        rows.append(
            {
                "kernel": label,
                "kind": kind,
                "bytes": 8 * elements,
                "runs": runs[label],
                "processes": median,
            }
        )
        print(f"kinds: {label:40s} {n} processes {median:.2f}x one")
    return rows


def _hand_off(exchanges: int = 5_000) -> float:
    """Microseconds for one thread to wake another and be woken back (two locks
    passed to and fro): what a thread pays when it wants the GIL while another
    holds it and must sleep until it is handed over."""
    mine, theirs = threading.Lock(), threading.Lock()
    mine.acquire()
    theirs.acquire()

    def other():
        for _ in range(exchanges):
            mine.acquire()
            theirs.release()

    helper = threading.Thread(target=other)
    helper.start()
    start = time.perf_counter()
    for _ in range(exchanges):
        mine.release()
        theirs.acquire()
    elapsed = time.perf_counter() - start
    helper.join()
    return elapsed / exchanges * 1e6


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.net not in NETS:
        print(f"bench_threads: unknown net {args.net!r}; known: {list(NETS)}", file=sys.stderr)
        return 2
    sizes, activation, batch = NETS[args.net]
    if args.dry_run:
        sizes, batch = (36, 6, 10), 8
    n = max(2, host_threads(args.threads))
    x, t, data_name = load_batch(batch, sizes[0], args.dry_run)
    x = x[:, : sizes[0]]
    net = xpnet.MultiLayerNet(sizes[0], list(sizes[1:-1]), sizes[-1], activation, seed=args.seed)
    tune_host_allocator()  # as xpnet does for its threads; the processes inherit it
    shares = _Shares(net, x, t, n)
    xpnet.procs.helpers(n - 1, wait=True)  # started before any timing
    cases = {
        "xpnet, 1 thread": lambda: net.numerical_gradient(x, t, n_threads=1),
        f"xpnet, {n} threads": on_threads(lambda: net.numerical_gradient(x, t, n_threads=n)),
        f"xpnet, {n} cores (helper processes)": lambda: net.numerical_gradient(x, t, n_threads=n),
        f"xpnet, {n} cores, sample blocks": _in_blocks(
            lambda: net.numerical_gradient(x, t, n_threads=n)
        ),
        f"{n} processes at once": shares.together,
        f"{n} processes one after another": shares.one_after_another,
    }
    rounds = 1 if args.dry_run else args.rounds
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        times, usage = _time(cases, rounds, list(cases)[:4], progress)
    finally:
        shares.close()
    rows = _rows(times, usage)
    one, threads, helpers, blocks, together, apart = (r["median_s"] for r in rows)
    speedups = {
        "threads": one / threads,
        "helper_processes": one / helpers,
        "sample_blocks": one / blocks,
        "processes": apart / together,
    }
    paired = _paired(
        times[f"xpnet, {n} cores (helper processes)"], times[f"xpnet, {n} cores, sample blocks"]
    )
    print(f"{args.net}, N={batch}, {data_name}, {rounds} rounds")
    _print(rows, speedups, n)
    print(
        f"paired by round: the default {paired['median']:.3f}x the sample blocks' time "
        f"(quartiles {paired['q1']:.3f}-{paired['q3']:.3f}), faster in "
        f"{paired['faster']} of {rounds} rounds"
    )
    granularity = _granularity(n, args.dry_run)
    kinds = _kinds(n, args.dry_run)
    hand_off = statistics.median(_hand_off(200 if args.dry_run else 5_000) for _ in range(3))
    print(f"hand-off: one thread wakes another and is woken back in {hand_off:.1f} us")
    info = machine_info([("numpy", None)])
    out = {
        "command": "python scripts/bench_threads.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": info,
        "net": args.net,
        "data": data_name,
        "threads": n,
        "rounds": rounds,
        "rows": rows,
        "speedups": speedups,
        "paired": paired,
        "granularity": granularity,
        "kinds": kinds,
        "hand_off_us": hand_off,
    }
    save_json(Path(args.out), out)
    print(f"wrote {args.out}  ({info['cpu']}, {info['date']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
