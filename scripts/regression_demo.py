"""The course's regression exercise: a 2-3-3-1 network learns a function of two
inputs by online learning (one sample per step), for several input ranges.

The target is ``t = u1 * u2`` on the unit square; the network sees
``x = range * u``, so every range describes the same function and only the
scale of the inputs changes. Each step is one SGD update with the numerical
gradient (``method="auto"``) of the squared error ``0.5 * (y - t)^2``. Writes
the loss curves (``regression-loss.png``) and a JSON summary.

    python scripts/regression_demo.py --out docs/bench
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import xpnet
from xpnet.io import save_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--ranges", default="1,10,100", help="input ranges to compare (comma-separated)")
    p.add_argument("--steps", type=int, default=20_000, help="online steps (one sample each)")
    p.add_argument("--lr", type=float, default=0.5, help="SGD learning rate")
    p.add_argument("--hidden", default="3,3", help="hidden layer sizes")
    p.add_argument("--activation", choices=("sigmoid", "relu"), default="sigmoid")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and samples")
    p.add_argument("--out", default="bench-out", help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def run(scale, args, hidden):
    """Online SGD on inputs in [0, scale]^2; returns (per-step losses, test loss)."""
    rng = np.random.default_rng(args.seed)
    u = rng.random((args.steps + 1000, 2))
    x, t = scale * u, (u[:, 0] * u[:, 1])[:, None]
    net = xpnet.MultiLayerNet(2, hidden, 1, args.activation, 1.0, output="identity", seed=args.seed)
    losses = []
    bar = tqdm(range(args.steps), desc=f"range {scale:g}", disable=args.no_progress)
    for i in bar:
        # the loss of each new sample *before* the step on it: online learning's
        # honest running error (after the step the net has just fitted that sample)
        losses.append(float(net.loss(x[i : i + 1], t[i : i + 1])))
        grads = net.numerical_gradient(x[i : i + 1], t[i : i + 1])
        for name in net.params:
            net.params[name] = net.params[name] - args.lr * grads[name]
    test = float(net.loss(x[args.steps :], t[args.steps :]))
    return losses, test


def main(argv=None) -> int:
    args = parse_args(argv)
    hidden = [int(v) for v in args.hidden.split(",")]
    ranges = [float(v) for v in args.ranges.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for scale in ranges:
        losses, test = run(scale, args, hidden)
        results[scale] = (losses, test)
        print(f"inputs in [0, {scale:g}]^2: test loss {test:.5f} after {args.steps} online steps")

    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    window = max(1, args.steps // 100)
    for scale, (losses, _) in results.items():
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window, len(losses) + 1), smooth, label=f"inputs in [0, {scale:g}]²")
    ax.set(
        xlabel="online step (one sample)",
        ylabel=f"loss of the next sample, before its step (mean of {window})",
        yscale="log",
    )
    ax.set_title(
        f"2-{'-'.join(map(str, hidden))}-1 {args.activation}, identity head, lr {args.lr:g}"
    )
    ax.legend()
    fig.savefig(out / "regression-loss.png")
    summary = {
        "command": "python scripts/regression_demo.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "test_loss": {f"{k:g}": v[1] for k, v in results.items()},
        "steps": args.steps,
        "lr": args.lr,
    }
    save_json(out / "regression.json", json.loads(json.dumps(summary)))
    print(f"wrote {out}/regression-loss.png, regression.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
