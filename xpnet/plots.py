"""Training plots, saved to files.

Rules of this module: figures are built with ``matplotlib.figure.Figure`` and
written with ``savefig``; pyplot (and its global state and windows) is never used.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["save_accuracy_plot", "save_loss_plot"]


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def save_accuracy_plot(history: dict, path) -> Path:
    """Train and test accuracy per epoch (the book's figure 4-12)."""
    fig, ax = _figure()
    epochs = range(1, len(history["train_acc"]) + 1)
    ax.plot(epochs, history["train_acc"], marker="o", markersize=3, label="train acc")
    ax.plot(epochs, history["test_acc"], marker="s", markersize=3, linestyle="--", label="test acc")
    ax.set(xlabel="epochs", ylabel="accuracy", ylim=(0, 1.0))
    ax.legend(loc="lower right")
    ax.set_title(_title(history))
    fig.savefig(path)
    return Path(path)


def save_loss_plot(history: dict, path) -> Path:
    """Minibatch loss per iteration."""
    fig, ax = _figure()
    ax.plot(range(1, len(history["loss"]) + 1), history["loss"], linewidth=0.8)
    ax.set(xlabel="iteration", ylabel="loss", yscale="log")
    ax.set_title(_title(history))
    fig.savefig(path)
    return Path(path)


def _title(history: dict) -> str:
    c = history.get("config", {})
    method = f" ({c.get('method')})" if c.get("grad") == "numerical" else ""
    return f"{c.get('dataset', '')}: {c.get('grad', '')} gradient{method}, {c.get('backend', '')}"
