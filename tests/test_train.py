import numpy as np
import pytest

import xpnet
from xpnet.datasets import load_digits
from xpnet.train import CHECKPOINT, TrainConfig, TrainingDiverged, evaluate, evaluate_loss, train


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _small(**kw):
    base = dict(dataset="digits", hidden=10, batch_size=50, iters=58, seed=3)  # 2 epochs of 29
    return TrainConfig(**(base | kw))


@pytest.mark.parametrize("grad", ["numerical", "backprop"])
def test_history_has_the_books_lists(digits, grad):
    net_of_h, h, _ = train(_small(grad=grad), data=digits, log=None, progress=False)
    assert len(h["loss"]) == 58 and h["iters_done"] == 58
    assert h["eval_iters"] == [29, 58] and len(h["train_acc"]) == len(h["test_acc"]) == 2
    assert all(np.isfinite(h["loss"]))
    assert h["config"]["lr"] == 0.5 and h["config"]["iters"] == 58
    assert isinstance(net_of_h, xpnet.TwoLayerNet)


def test_training_learns(digits):
    net_of_h, h, _ = train(
        _small(grad="backprop", iters=290, weight_init_std=0.3),
        data=digits,
        log=None,
        progress=False,
    )
    assert np.mean(h["loss"][-10:]) < 0.5 * np.mean(h["loss"][:10])
    assert h["test_acc"][-1] > 0.8


@pytest.mark.slow  # 40 s: 1,000 iterations with the numerical gradient
def test_default_run_is_the_main_job(digits):
    """What `xpnet train` does with no options: numerical gradient on the digits,
    at least 90% test accuracy (the README's promise)."""
    net_of_h, h, _ = train(TrainConfig(), data=digits, log=None, progress=False)
    c = h["config"]
    assert (c["dataset"], c["grad"], c["method"], c["iters"]) == (
        "digits",
        "numerical",
        "auto",
        1000,
    )
    assert h["test_acc"][-1] >= 0.9


def test_numerical_and_backprop_training_agree(digits):
    """Same seed, same minibatches: the two gradients differ by ~1e-6, so the
    trajectories stay close over a short run."""
    a = train(_small(grad="numerical"), data=digits, log=None, progress=False).history
    b = train(_small(grad="backprop"), data=digits, log=None, progress=False).history
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)


def test_runs_on_strict_device1(digits):
    net_of_h, h, _ = train(
        _small(backend="array_api_strict", device="device1", iters=10),
        data=digits,
        log=None,
        progress=False,
    )
    assert net_of_h.params["W1"].device == net_of_h.device


def test_resume_equals_uninterrupted(tmp_path, digits):
    full = train(_small(iters=87), data=digits, out=tmp_path / "a", log=None, progress=False)
    train(_small(iters=29), data=digits, out=tmp_path / "b", log=None, progress=False)
    assert (tmp_path / "b" / CHECKPOINT).is_file()
    resumed = train(
        _small(iters=87), data=digits, out=tmp_path / "b", resume=True, log=None, progress=False
    )
    assert resumed.history["loss"] == full.history["loss"]
    assert resumed.history["test_acc"] == full.history["test_acc"]
    for name in full.net.params:
        np.testing.assert_array_equal(resumed.net.params[name], full.net.params[name])


def test_resume_refuses_other_settings(tmp_path, digits):
    train(_small(iters=29), data=digits, out=tmp_path, log=None, progress=False)
    with pytest.raises(ValueError, match="different settings.*hidden"):
        train(_small(hidden=12), data=digits, out=tmp_path, resume=True, log=None, progress=False)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_divergence_names_iteration_and_suggests_lr(digits):
    with pytest.raises(TrainingDiverged, match=r"iteration \d+.*smaller learning rate"):
        # the book's loss is bounded (-log 1e-7 ~ 16): divergence shows as NaN once
        # the weights overflow
        train(
            _small(grad="backprop", lr=1e300, activation="relu", weight_init_std=1.0),
            data=digits,
            log=None,
            progress=False,
        )


def test_epoch_lines_are_logged(digits):
    lines = []
    train(_small(), data=digits, log=lines.append, progress=False)
    assert lines[0].startswith("epoch 1, train acc 0.") and "test acc" in lines[0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(grad="symbolic"), "grad='symbolic'"),
        (dict(method="fast"), "method='fast'"),
        (dict(optimizer="lbfgs"), "optimizer='lbfgs'"),
        (dict(iters=10, epochs=2), "iters or epochs"),
        (dict(hidden=0), "hidden must be a positive int"),
        (dict(lr=-1.0), "lr must be a positive finite float"),
        (dict(lr=float("inf")), "lr must be a positive finite float"),
        (dict(output="tanh"), "output=.tanh. is not known"),
        (dict(weight_decay=-1.0), "weight_decay must be a finite"),
    ],
)
def test_bad_configs(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _small(**kwargs).resolved(100)


def test_epochs_and_defaults():
    c = TrainConfig(dataset="mnist", epochs=2).resolved(60000)
    assert c.iters == 1200 and c.lr == 0.1
    assert TrainConfig().resolved(1438).iters == 1000
    assert TrainConfig(optimizer="adam").resolved(1438).lr == 0.001


def test_evaluate_in_batches_equals_whole(digits):
    (x, t), _ = digits
    net = xpnet.TwoLayerNet(64, 10, 10, 1.0, seed=0)
    assert evaluate(net, x, t, batch=100) == pytest.approx(net.accuracy(x, t), abs=1e-12)


@pytest.mark.slow  # 70 s: 300 iterations on real Fashion-MNIST
@pytest.mark.skipif(
    not __import__("pathlib").Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="apt-get install dataset-fashion-mnist",
)
def test_fashion_mnist_learns_with_numerical_gradient():
    """The book's 784-50-10 net on real data, numerical gradient: after 300
    iterations test accuracy is far above chance (10%)."""
    data = xpnet.datasets.load_fashion_mnist()
    (x, t), (xt, tt) = data
    small = ((x[:6000], t[:6000]), (xt[:2000], tt[:2000]))
    net_of_h, h, _ = train(
        TrainConfig(dataset="fashion-mnist", iters=300, lr=0.1),
        data=small,
        log=None,
        progress=False,
    )
    assert h["test_acc"][-1] > 0.4  # chance is 0.1; this run reaches 0.54


def test_deep_net_any_head_and_online_learning(digits):
    """Depth 2, the sigmoid head (one-hot 0/1 targets) and batch size 1 train."""
    net_of_h, h, _ = train(
        _small(
            hidden=[12, 8],
            activation="relu",
            weight_init_std="he",
            output="sigmoid",
            batch_size=1,
            iters=40,
            lr=0.5,
        ),
        data=digits,
        log=None,
        progress=False,
    )
    net = net_of_h
    assert isinstance(net, xpnet.MultiLayerNet) and not isinstance(net, xpnet.TwoLayerNet)
    assert net.sizes == (64, 12, 8, 10) and net.output == "sigmoid"
    assert len(h["loss"]) == 40 and all(np.isfinite(h["loss"]))
    assert len(h["train_acc"]) == len(h["train_loss"]) == len(h["eval_iters"])


def test_regression_with_float_targets_records_loss_not_accuracy():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (300, 2))
    t = 0.5 * x[:, 0] - x[:, 1]  # 1-D float targets: one output
    data = ((x[:200], t[:200]), (x[200:], t[200:]))
    net_of_h, h, _ = train(
        TrainConfig(
            hidden=[6, 6],
            activation="sigmoid",
            output="identity",
            weight_init_std=1.0,
            grad="numerical",
            batch_size=1,
            iters=600,
            lr=0.1,
            seed=0,
        ),
        data=data,
        log=None,
        progress=False,
    )
    assert h["train_acc"] == [] and h["test_acc"] == []
    assert net_of_h.sizes == (2, 6, 6, 1)
    untrained = xpnet.MultiLayerNet(2, [6, 6], 1, "sigmoid", 1.0, output="identity", seed=0)
    assert h["test_loss"][-1] < 0.5 * float(untrained.loss(x[200:], t[200:]))


def test_weight_decay_keeps_weights_smaller(digits):
    plain = train(_small(grad="backprop", iters=100), data=digits, log=None, progress=False)
    decayed = train(
        _small(grad="backprop", iters=100, weight_decay=0.5), data=digits, log=None, progress=False
    )
    norm = lambda run: float(np.linalg.norm(xpnet.to_numpy(run.net.params["W1"])))  # noqa: E731
    assert norm(decayed) < norm(plain)


def test_resume_refuses_a_changed_head_or_decay(tmp_path, digits):
    train(_small(iters=29), data=digits, out=tmp_path, log=None, progress=False)
    for change in (dict(output="sigmoid"), dict(weight_decay=0.1), dict(hidden=[10, 5])):
        with pytest.raises(ValueError, match="different settings"):
            train(
                _small(**change), data=digits, out=tmp_path, resume=True, log=None, progress=False
            )


def test_resume_of_a_deep_run_equals_uninterrupted(tmp_path, digits):
    deep = dict(
        hidden=[10, 6],
        activation="relu",
        weight_init_std="he",
        weight_decay=0.01,
        optimizer="momentum",
        lr=0.05,
    )
    full = train(
        _small(iters=58, **deep), data=digits, out=tmp_path / "a", log=None, progress=False
    )
    train(_small(iters=29, **deep), data=digits, out=tmp_path / "b", log=None, progress=False)
    resumed = train(
        _small(iters=58, **deep),
        data=digits,
        out=tmp_path / "b",
        resume=True,
        log=None,
        progress=False,
    )
    assert resumed.history["loss"] == full.history["loss"]
    assert resumed.history["test_acc"] == full.history["test_acc"]


# ---- device -> host transfers ----------------------------------------------------
def test_a_backprop_step_makes_at_most_one_transfer_on_average(digits, transfers):
    config = _small(grad="backprop", backend="array_api_strict", device="device1", iters=100)
    net_of_h, h, _ = train(config, data=digits, log=None, progress=False)
    steps = h["iters_done"]
    assert steps == 100 and len(h["loss"]) == 100
    # measured 19 for 100 steps: validation of the data once, the initial loss,
    # the losses in batches of 50, one transfer per evaluation set
    assert transfers["n"] <= steps // 2, transfers["n"]
    assert transfers["n"] > 0  # the counter sees the transfers that remain


def test_counting_wrapper_sees_transfers(transfers):
    import array_api_strict as xp

    a = xp.asarray([1.0, 2.0], device=xp.Device("device1"))
    float(xp.sum(a))
    bool(xp.all(a > 0))
    xpnet.to_numpy(a)
    assert transfers["n"] == 3


def test_evaluate_loss_in_batches_equals_whole(digits):
    (x, t), _ = digits
    net = xpnet.TwoLayerNet(64, 10, 10, 1.0, seed=0)
    whole = float(net.loss(x, t))
    assert evaluate_loss(net, x, t, batch=100) == pytest.approx(whole, rel=1e-12)


def test_evaluate_counts_outputs_for_the_sigmoid_head(digits):
    (x, labels), _ = digits
    t = np.eye(10)[labels]  # 0/1 targets, ten outputs per sample
    net = xpnet.MultiLayerNet(64, [8], 10, "sigmoid", 1.0, output="sigmoid", seed=0)
    assert evaluate(net, x, t, batch=97) == pytest.approx(net.accuracy(x, t), abs=1e-12)


def test_resolving_a_resolved_config_changes_nothing():
    """The CLI resolves a config to print it and hands it to train, which
    resolves it again: with --epochs both iters and epochs are then set."""
    once = TrainConfig(epochs=2).resolved(1_000)
    assert once.resolved(1_000) == once
    with pytest.raises(ValueError, match="give iters or epochs, not both"):
        TrainConfig(epochs=2, iters=7).resolved(1_000)


def test_the_api_writes_what_the_cli_writes_and_its_history_is_json(tmp_path, digits):
    import json

    from xpnet.rundir import OUTPUTS

    net, history, written = train(
        _small(iters=30), data=digits, out=tmp_path, log=None, progress=False
    )
    assert sorted(written) == sorted(OUTPUTS)
    assert all((tmp_path / name).is_file() for name in OUTPUTS)
    assert json.loads(json.dumps(history)) == json.loads((tmp_path / "history.json").read_text())
    assert history["iters_done"] == 30 and isinstance(net, xpnet.TwoLayerNet)
    loaded = xpnet.MultiLayerNet.load(tmp_path / "params.npz")
    for name in net.params:
        np.testing.assert_array_equal(xpnet.to_numpy(loaded.params[name]), net.params[name])


def test_plot_history_is_a_figure_of_the_curves(digits):
    _, history, _ = train(_small(iters=30), data=digits, log=None, progress=False)
    fig = xpnet.plot_history(history)
    assert len(fig.axes) == 2
    assert len(fig.axes[0].lines[0].get_xdata()) == 30


def test_resume_refuses_another_method_or_backend(tmp_path, digits):
    train(_small(iters=29), data=digits, out=tmp_path, log=None, progress=False)
    for change in (dict(method="complex"), dict(backend="array_api_strict")):
        with pytest.raises(ValueError, match="different settings"):
            train(
                _small(iters=58, **change),
                data=digits,
                out=tmp_path,
                resume=True,
                log=None,
                progress=False,
            )


def test_xpnet_shorten_divides_iterations_once(monkeypatch):
    monkeypatch.setenv("XPNET_SHORTEN", "100")
    once = TrainConfig(epochs=20).resolved(1_000)
    assert once.iters == 2  # 20 epochs of 10 iterations, divided by 100
    assert once.resolved(1_000).iters == 2  # not divided again
    assert TrainConfig(iters=50).resolved(1_000).iters == 1  # at least one
    monkeypatch.setenv("XPNET_SHORTEN", "zero")
    with pytest.raises(ValueError, match=r"\$XPNET_SHORTEN must be a positive integer"):
        TrainConfig().resolved(1_000)


def test_threads_of_the_numerical_gradient_are_a_setting(digits, monkeypatch):
    import sys

    module = sys.modules["xpnet.train"]  # (xpnet.train is the function)
    seen = []
    real = module.model_gradient
    monkeypatch.setattr(
        module, "model_gradient", lambda *a, **k: seen.append(k["n_threads"]) or real(*a, **k)
    )
    train(_small(iters=3, threads=1), data=digits, log=None, progress=False)
    assert seen == [1, 1, 1]
    with pytest.raises(ValueError, match="threads must be a positive int"):
        TrainConfig(threads=0).resolved(100)
