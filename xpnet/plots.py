"""Training plots, saved to files.

Rules of this module: figures are built with ``matplotlib.figure.Figure`` and
rendered to memory, then written atomically with :func:`xpnet.io.atomic_write_bytes`
(never through a link planted at the target); pyplot (and its global state and
windows) is never used.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from .io import atomic_write_bytes

__all__ = ["plot_history", "save_accuracy_plot", "save_loss_plot", "save_sweep_plot"]


def _figure():
    from matplotlib.figure import Figure

    # fixed margins: a layout engine draws the figure twice more (~2x the time)
    fig = Figure(figsize=(6, 4), dpi=100)
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.92)
    return fig, fig.add_subplot()


def plot_history(history: dict):
    """A run's curves as one matplotlib ``Figure`` (shown inline in a notebook,
    ``fig.savefig(path)`` to keep it): the minibatch loss per iteration and,
    for heads with an accuracy, train and test accuracy per epoch.

    ``history``: what :func:`xpnet.train` returns (or ``history.json`` read back).
    """
    from matplotlib.figure import Figure

    class HistoryFigure(Figure):
        """A Figure that a notebook shows inline without pyplot."""

        def _repr_png_(self):
            buffer = io.BytesIO()
            self.savefig(buffer, format="png")
            return buffer.getvalue()

    panels = 2 if history["train_acc"] else 1
    fig = HistoryFigure(figsize=(5 * panels, 3.6), dpi=100)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.15, top=0.88, wspace=0.3)
    loss_ax = fig.add_subplot(1, panels, 1)
    loss_ax.plot(range(1, len(history["loss"]) + 1), history["loss"], linewidth=0.7)
    loss_ax.set(xlabel="iteration", ylabel="minibatch loss", yscale="log")
    if panels == 2:
        acc_ax = fig.add_subplot(1, 2, 2)
        epochs = range(1, len(history["train_acc"]) + 1)
        acc_ax.plot(epochs, history["train_acc"], marker="o", markersize=3, label="train acc")
        acc_ax.plot(epochs, history["test_acc"], marker="s", markersize=3, label="test acc")
        acc_ax.set(xlabel="epochs", ylabel="accuracy", ylim=(0, 1.0))
        acc_ax.legend(loc="lower right")
    fig.suptitle(_title(history), fontsize=9)
    return fig


def _save(fig, path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def save_accuracy_plot(history: dict, path) -> Path:
    """Train and test accuracy per epoch (the book's figure 4-12)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure()
    epochs = range(1, len(history["train_acc"]) + 1)
    ax.plot(epochs, history["train_acc"], marker="o", markersize=3, label="train acc")
    ax.plot(epochs, history["test_acc"], marker="s", markersize=3, linestyle="--", label="test acc")
    ax.set(xlabel="epochs", ylabel="accuracy", ylim=(0, 1.0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, len(epochs) + 0.5)  # one epoch would otherwise get ticks 0.95-1.05
    ax.legend(loc="lower right")
    final = f", final test acc {history['test_acc'][-1]:.4f}" if history["test_acc"] else ""
    ax.set_title(_title(history) + final, fontsize=9)
    return _save(fig, path)


def save_loss_plot(history: dict, path) -> Path:
    """Minibatch loss per iteration: raw (faint) and smoothed."""
    import numpy as np  # host: a moving average of host floats
    from matplotlib.ticker import LogFormatter

    fig, ax = _figure()
    loss = np.asarray(history["loss"], dtype=float)  # host
    steps = np.arange(1, len(loss) + 1)  # host
    ax.plot(steps, loss, linewidth=0.5, alpha=0.3, color="C0")
    window = max(1, min(len(loss) // 20, 100))
    if len(loss) >= window > 1:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")  # host
        ax.plot(steps[window - 1 :], smooth, color="C0", label=f"minibatch loss (mean of {window})")
    else:
        ax.lines[0].set(alpha=1.0, label="minibatch loss")
    ax.set(xlabel="iteration", ylabel="minibatch loss", yscale="log")
    # plain "1.2", not "1.2 x 10^0" (which overflows the margin); minor ticks are
    # labelled only where the axis spans little more than a decade
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.5)))
    ax.legend(loc="upper right")
    ax.set_title(_title(history), fontsize=9)
    return _save(fig, path)


def _title(history: dict) -> str:
    c = history.get("config", {})
    method = f" ({c.get('method')})" if c.get("grad") == "numerical" else ""
    return (
        f"{c.get('dataset', '')}: {c.get('grad', '')} gradient{method}, {c.get('backend', '')}, "
        f"{c.get('optimizer', '')} lr {c.get('lr', '')}"
    )


def save_sweep_plot(record: dict, path, best: int = 5) -> Path:
    """A hyperparameter sweep (the book's figure 6-24): validation accuracy of
    every trial against its learning rate and weight decay, and the per-epoch
    accuracy of the ``best`` trials (validation solid, training dashed)."""
    from matplotlib.figure import Figure

    trials = record["trials"]
    scored = [r for r in trials if r.get("val_acc") is not None]
    fig = Figure(figsize=(11, 4.2), dpi=100)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.28)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if scored:
        points = left.scatter(
            [r["lr"] for r in scored],
            [r["val_acc"] for r in scored],
            c=[math.log10(r["weight_decay"]) for r in scored],
            cmap="viridis",
            s=28,
        )
        fig.colorbar(points, ax=left, label="log10 weight decay")
    diverged = [r for r in trials if r.get("val_acc") is None]
    if diverged:
        left.scatter(
            [r["lr"] for r in diverged],
            [0.0] * len(diverged),
            marker="x",
            color="C3",
            label=f"diverged ({len(diverged)})",
        )
        left.legend(loc="upper left")
    left.set(xscale="log", xlabel="learning rate", ylabel="validation accuracy", ylim=(0, 1.0))
    left.set_title(f"{len(trials)} trials", fontsize=9)
    ranked = sorted(scored, key=lambda r: r["val_acc"], reverse=True)[:best]
    for k, r in enumerate(ranked):
        epochs = range(1, len(r["val_acc_curve"]) + 1)
        label = f"#{r['trial']} lr {r['lr']:.2g}, wd {r['weight_decay']:.2g}: {r['val_acc']:.3f}"
        right.plot(epochs, r["val_acc_curve"], color=f"C{k}", label=label)
        right.plot(epochs, r["train_acc_curve"], color=f"C{k}", linestyle="--", linewidth=0.8)
    right.set(xlabel="epochs", ylabel="accuracy (val solid, train dashed)", ylim=(0, 1.0))
    if ranked:
        right.legend(loc="lower right", fontsize=7)
    right.set_title(f"best {len(ranked)} by validation accuracy", fontsize=9)
    c = record.get("settings", {}).get("train", {})
    fig.suptitle(
        f"{c.get('dataset', '')}: random search of lr and weight decay, {c.get('grad', '')} "
        f"gradient, {c.get('optimizer', '')}",
        fontsize=10,
    )
    return _save(fig, path)
