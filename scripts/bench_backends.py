"""Forward pass, backprop and every numerical-gradient method, per backend, over sizes.

For each backend (numpy, torch CPU/CUDA, cupy: whatever is present), dtype,
hidden size and batch size: the median time of the forward pass, backprop
``gradient``, each numerical method, torch autograd as the peer (torch backends),
and the book's loop (extrapolated from a timed sample of coordinates: marked as
such). A measurement whose predicted time (scaled from the previous size by the
method's cost model) exceeds ``--max-seconds`` is skipped and recorded as skipped,
never estimated. Writes JSON, a Markdown table and a PNG plot into ``--out``.

    python scripts/bench_backends.py --quick            # < 1 minute on a CPU
    python scripts/bench_backends.py --out bench-out/backends   # the full sweep (GPU)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness import machine_info, parse_backends  # scripts/harness.py
from tqdm.auto import tqdm

from xpnet import TwoLayerNet, book, procs
from xpnet.backend import to_numpy
from xpnet.bench import mnist_like_batch
from xpnet.device import host_threads
from xpnet.io import atomic_write_bytes, save_json
from xpnet.timing import time_call

METHODS = ("forward", "backprop", "torch-autograd", "structured", "complex", "batched", "loop")
# one colour per method in every panel (matplotlib's default cycle)
COLORS = ("C0", "C1", "C2", "C3", "C4", "C5", "C7")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--backends", default="auto", help="comma-separated backend[:device], or auto (all present)"
    )
    p.add_argument("--hidden", default="50,100,512,1000", help="hidden sizes")
    p.add_argument("--batch", default="100,1000", help="batch sizes")
    p.add_argument("--dtypes", default="float64,float32", help="dtypes")
    p.add_argument("--methods", default=",".join(METHODS), help="methods")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=30.0,
        help="skip a measurement predicted to take longer than this",
    )
    p.add_argument(
        "--loop-sample", type=int, default=100, help="coordinates timed to extrapolate the loop"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sweep (hidden 20,50; batch 50,100; float64) for a CPU, < 1 min",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    p.add_argument("--out", default="bench-out/backends", help="output directory")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, one repeat")
    return p.parse_args(argv)


def _ints(text):
    return [int(v) for v in text.split(",") if v]


def cost(method, d, h, c, n, nnz):
    """Operation count model used only to predict whether a run fits the budget."""
    params = d * h + h + h * c + c
    forward = n * (d * h + h * c)
    return {
        "forward": forward,
        "backprop": 3 * forward,
        "torch-autograd": 3 * forward,
        "structured": 2 * (nnz + n) * h * c + 2 * n * (h + 1) * c * c,
        "complex": 8 * (nnz + n) * h * c + 8 * n * (h + 1) * c * c,
        "batched": 2 * params * forward,
        "loop": 2 * params * forward,
    }[method]


def _torch_autograd(net, x, labels):
    import torch

    params = {k: v.detach().clone().requires_grad_(True) for k, v in net.params.items()}

    def run():
        a1 = x @ params["W1"] + params["b1"]
        z1 = torch.sigmoid(a1)
        y = torch.softmax(z1 @ params["W2"] + params["b2"], dim=1)
        loss = -torch.log(y[torch.arange(x.shape[0], device=x.device), labels] + 1e-7).mean()
        return torch.autograd.grad(loss, list(params.values()))

    return run


def measure(net, method, x, labels, repeats, loop_sample):
    xp = net.xp
    if method == "loop":
        # the book's loop in plain NumPy on the host, one BLAS thread (the same
        # for every backend: it is the baseline, not a backend's method)
        params = {k: to_numpy(v) for k, v in net.params.items()}
        seconds, timed = book.loop_seconds(
            params, net.activation, to_numpy(x), to_numpy(labels), loop_sample
        )
        return {
            "median_s": seconds,
            "min_s": seconds,
            "max_s": seconds,
            "peak_bytes": None,
            "note": f"the book's loop (plain NumPy, 1 BLAS thread), extrapolated from "
            f"{timed} timed coordinates",
        }
    if method == "forward":
        fn = lambda: net.predict(x)  # noqa: E731
    elif method == "backprop":
        fn = lambda: net.gradient(x, labels)  # noqa: E731
    elif method == "torch-autograd":
        fn = _torch_autograd(net, x, labels)
    else:
        fn = lambda: net.numerical_gradient(x, labels, method=method)  # noqa: E731
    stats = time_call(fn, xp=xp, device=net.device, repeats=repeats, memory=True)
    stats.pop("result", None)
    return stats


def run_sweep(args):
    hidden, batches = _ints(args.hidden), _ints(args.batch)
    dtypes = args.dtypes.split(",")
    repeats, max_seconds, d = args.repeats, args.max_seconds, 784
    if args.quick:
        hidden, batches, dtypes, repeats, max_seconds = [20, 50], [50, 100], ["float64"], 3, 2.0
    if args.dry_run:
        hidden, batches, dtypes, repeats, max_seconds, d = [4, 6], [8], ["float64"], 1, 5.0, 16
    backends = parse_backends(args.backends)
    methods = args.methods.split(",")
    rows, last = [], {}
    configs = [(b, dt, h, n) for b in backends for dt in dtypes for n in batches for h in hidden]
    for (name, device), dtype, h, n in tqdm(configs, desc="sweep", disable=not sys.stderr.isatty()):
        net = TwoLayerNet(d, h, 10, backend=name, device=device, dtype=dtype, seed=args.seed)
        x_host, t_host = mnist_like_batch(n, d, seed=args.seed)
        batch = net.batch(x_host, t_host)
        x, labels = batch.x, batch.t
        nnz = int((x_host != 0).sum())
        params = d * h + h + h * 10 + 10
        for method in methods:
            if method == "torch-autograd" and name != "torch":
                continue
            base = dict(
                backend=name,
                device=str(net.device),
                dtype=dtype,
                hidden=h,
                batch=n,
                params=params,
                method=method,
            )
            key = (name, str(device), dtype, method)
            work = cost(method, d, h, 10, n, nnz)
            if method != "loop" and key in last:
                seconds, prev_work = last[key]
                predicted = seconds * work / prev_work
                if predicted > max_seconds:
                    rows.append(
                        {**base, "skipped": f"predicted {predicted:.0f} s > {max_seconds:g} s"}
                    )
                    continue
            try:
                stats = measure(net, method, x, labels, repeats, args.loop_sample)
            except (TypeError, ValueError, RuntimeError, MemoryError) as exc:
                rows.append({**base, "error": str(exc).splitlines()[0]})
                continue
            last[key] = (stats["median_s"], work)
            rows.append({**base, **stats})
    for row in rows:  # speed-up over the loop of the same configuration
        loop = next(
            (
                r
                for r in rows
                if r["method"] == "loop"
                and "median_s" in r
                and all(r[k] == row[k] for k in ("backend", "device", "dtype", "hidden", "batch"))
            ),
            None,
        )
        if loop and "median_s" in row:
            row["vs_loop"] = loop["median_s"] / row["median_s"]
    return rows, backends


def markdown(rows, info) -> str:
    lines = [
        f"Machine: {info['cpu']} ({info['cpu_count']} cores); devices: "
        f"{json.dumps(info['devices'])}; {info['date']}",
        "",
        "| backend | device | dtype | hidden | batch | params | method | median | vs loop | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = (
            f"| {r['backend']} | {r['device']} | {r['dtype']} | {r['hidden']} | {r['batch']} | "
            f"{r['params']:,} | {r['method']} |"
        )
        if "median_s" not in r:
            lines.append(f"{head} {r.get('skipped') or r.get('error')} | | |")
            continue
        peak = "" if r.get("peak_bytes") is None else f"{r['peak_bytes'] / 2**20:.1f}"
        ratio = f"{r['vs_loop']:.0f}x" if "vs_loop" in r else ""
        note = " (extrapolated)" if r["method"] == "loop" else ""
        lines.append(f"{head} {_fmt(r['median_s'])}{note} | {ratio} | {peak} |")
    return "\n".join(lines) + "\n"


def _fmt(seconds):
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.2f} ms"


def plot(rows, path):
    from matplotlib.figure import Figure

    done = [r for r in rows if "median_s" in r]
    dtypes = sorted({r["dtype"] for r in done})
    batches = sorted({r["batch"] for r in done})
    fig = Figure(
        figsize=(6 * max(len(batches), 1), 4.5 * max(len(dtypes), 1)), layout="constrained"
    )
    grid = fig.subplots(max(len(dtypes), 1), max(len(batches), 1), squeeze=False)
    panels = [
        (grid[a][b], dtype, batch)
        for a, dtype in enumerate(dtypes)
        for b, batch in enumerate(batches)
    ]
    for ax, dtype, batch in panels:
        series = {}
        for r in done:
            if (r["dtype"], r["batch"]) == (dtype, batch):
                series.setdefault((r["backend"], r["device"], r["method"]), []).append(
                    (r["params"], r["median_s"])
                )
        styles = {}
        for (backend, device, method), points in sorted(series.items()):
            points.sort()
            style = styles.setdefault((backend, device), ("-", "--", ":", "-.")[len(styles) % 4])
            ax.plot(
                *zip(*points, strict=True),
                style,
                marker="o",
                markersize=3,
                color=COLORS[METHODS.index(method)],
                label=f"{backend}:{device} {method}",
            )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="parameters",
            ylabel="seconds per call",
            title=f"{dtype}, batch {batch}",
        )
        ax.legend(fontsize=6, ncols=2)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    args = parse_args(argv)
    procs.helpers(host_threads() - 1, wait=True)  # NumPy rows time the default: helpers
    rows, backends = run_sweep(args)
    info = machine_info(backends)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/bench_backends.py " + " ".join(sys.argv[1:] if argv is None else argv)
    save_json(
        out / "backends.json",
        json.loads(json.dumps({"command": command, "machine": info, "rows": rows}, default=str)),
    )
    table = markdown(rows, info)
    atomic_write_bytes(out / "backends.md", f"`{command}`\n\n{table}".encode())
    plot(rows, out / "backends.png")
    print(table)
    print(f"wrote {out}/backends.json, backends.md, backends.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
