"""The book's full run with the numerical gradient, timed per backend.

``train_neuralnet.py``: 784-50-10 sigmoid, SGD lr 0.1, batch 100, 10,000
iterations, train/test accuracy every epoch of 600 iterations, on Fashion-MNIST
(Debian's dataset-fashion-mnist) or MNIST. Reports wall time, time per
iteration and final accuracies per backend; writes JSON and the accuracy plot.

    python scripts/bench_train.py --backends numpy --out bench-out/train
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness import machine_info, parse_backends  # scripts/harness.py

import xpnet
from xpnet.io import save_json
from xpnet.plots import save_accuracy_plot


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--backends", default="auto", help="comma-separated backend[:device], or auto (all present)"
    )
    p.add_argument(
        "--dataset",
        choices=("fashion-mnist", "mnist", "digits"),
        default="fashion-mnist",
        help="data set (the book uses MNIST; Fashion-MNIST has the same format)",
    )
    p.add_argument("--data-dir", default=None, help="directory with the IDX files")
    p.add_argument("--iters", type=int, default=10_000, help="iterations (the book's 10,000)")
    p.add_argument("--method", default="auto", help="numerical-gradient method")
    p.add_argument(
        "--grad", choices=("numerical", "backprop"), default="numerical", help="gradient"
    )
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="dtype")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and minibatches")
    p.add_argument("--out", default="bench-out/train", help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="embedded digits, 20 iterations: checks the script end to end",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    dataset, iters = args.dataset, args.iters
    if args.dry_run:
        dataset, iters = "digits", 20
    data = xpnet.datasets.load_dataset(dataset, path=args.data_dir)
    backends = parse_backends(args.backends)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, device in backends:
        config = xpnet.TrainConfig(
            dataset=dataset,
            backend=name,
            device=device,
            dtype=args.dtype,
            grad=args.grad,
            method=args.method,
            iters=iters,
            lr=0.1,
            seed=args.seed,
        )
        _, history, _ = xpnet.train(
            config,
            data=data,
            progress=False if args.no_progress else None,
            log=lambda line, name=name: print(f"[{name}] {line}"),
        )
        tag = f"{name}-{device or 'default'}"
        save_accuracy_plot(history, out / f"accuracy-{tag}.png")
        results.append(
            {
                "backend": name,
                "device": str(xpnet.resolve_backend(name, device).device),
                "iters": history["iters_done"],
                "wall_s": history["wall_time"],
                "ms_per_iter": 1e3 * history["time_per_iter"],
                "final_train_acc": history["train_acc"][-1],
                "final_test_acc": history["test_acc"][-1],
                "train_acc": history["train_acc"],
                "test_acc": history["test_acc"],
            }
        )
    print(f"\n{dataset}, {iters} iterations, {args.grad} gradient ({args.method}), {args.dtype}")
    print(f"{'backend':<16} {'wall':>10} {'per iter':>10} {'train acc':>10} {'test acc':>9}")
    for r in results:
        print(
            f"{r['backend'] + ':' + r['device']:<16} {r['wall_s']:>9.1f}s {r['ms_per_iter']:>8.1f}ms "
            f"{r['final_train_acc']:>10.4f} {r['final_test_acc']:>9.4f}"
        )
    command = "python scripts/bench_train.py " + " ".join(sys.argv[1:] if argv is None else argv)
    save_json(
        out / "train.json",
        json.loads(
            json.dumps(
                {
                    "command": command,
                    "machine": machine_info(backends),
                    "dataset": dataset,
                    "results": results,
                },
                default=str,
            )
        ),
    )
    print(f"wrote {out}/train.json and accuracy plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
