import numpy as np
from matplotlib.image import imread

import xpnet
from xpnet.plots import _title, save_accuracy_plot, save_loss_plot


def _history(n_epochs=3, n_iters=60):
    rng = np.random.default_rng(0)
    return {
        "config": {
            "dataset": "digits",
            "grad": "numerical",
            "method": "auto",
            "backend": "numpy",
            "optimizer": "adam",
            "lr": 0.01,
        },
        "loss": list(2.3 * np.exp(-np.arange(n_iters) / 20) + 0.05 * rng.random(n_iters)),
        "train_acc": list(np.linspace(0.5, 0.9, n_epochs)),
        "test_acc": list(np.linspace(0.45, 0.8765, n_epochs)),
    }


def test_title_names_optimizer_lr_and_method():
    title = _title(_history())
    assert "adam lr 0.01" in title and "numerical gradient (auto)" in title


def test_plots_are_pngs_written_through_no_link(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"mine")
    (tmp_path / "acc.png").symlink_to(outside)
    save_accuracy_plot(_history(), tmp_path / "acc.png")
    save_loss_plot(_history(), tmp_path / "loss.png")
    assert outside.read_bytes() == b"mine"
    for name in ("acc.png", "loss.png"):
        image = imread(tmp_path / name)
        assert image.shape[0] > 100 and image.shape[1] > 100


def test_short_runs_plot_too(tmp_path):
    save_loss_plot(_history(n_iters=3), tmp_path / "loss.png")
    save_accuracy_plot(_history(n_epochs=1), tmp_path / "acc.png")
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_plot_history_shows_inline_as_png():
    history = {
        "loss": [2.3, 2.0, 1.5],
        "train_acc": [0.5, 0.7],
        "test_acc": [0.4, 0.6],
        "config": {"grad": "numerical", "method": "auto"},
    }
    fig = xpnet.plot_history(history)
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
