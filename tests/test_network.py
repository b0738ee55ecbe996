import numpy as np
import pytest
from conftest import (
    host_params,
    make_batch,
    make_net,
    ref_forward,
    ref_gradient,
    ref_loss,
    rel_error,
)

import xpnet
from xpnet.backend import to_numpy


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_forward_loss_backprop_match_reference(backend, activation):
    net = make_net(backend, (9, 6, 4), activation=activation)
    x, t = make_batch(8, 9, 4)
    p = host_params(net)
    y = to_numpy(net.predict(x))
    np.testing.assert_allclose(y, ref_forward(p, x, activation)[2], rtol=1e-12)
    assert float(net.loss(x, t)) == pytest.approx(ref_loss(p, x, t, activation), rel=1e-13)
    grads = net.gradient(x, t)
    expect = ref_gradient(p, x, t, activation)
    for name in xpnet.network.PARAM_NAMES:
        assert grads[name].shape == net.params[name].shape
        np.testing.assert_allclose(to_numpy(grads[name]), expect[name], rtol=1e-10, atol=1e-15)


def test_results_stay_on_device(backend):
    net = make_net(backend)
    x, t = make_batch(4, 7, 3)
    assert net.predict(x).device == backend.device
    assert net.loss(x, t).device == backend.device
    assert net.loss(x, t).shape == ()
    assert all(g.device == backend.device for g in net.gradient(x, t).values())


def test_same_seed_same_weights_on_every_backend(backend):
    net = make_net(backend, (20, 8, 5), seed=42, std=0.01)
    ref = xpnet.TwoLayerNet(20, 8, 5, seed=42)
    for name in ref.params:
        np.testing.assert_array_equal(to_numpy(net.params[name]), to_numpy(ref.params[name]))
    assert not np.all(
        to_numpy(net.params["W1"]) == to_numpy(make_net(backend, (20, 8, 5), seed=43).params["W1"])
    )


def test_params_assignment_is_honoured(backend):
    net = make_net(backend)
    x, t = make_batch(5, 7, 3)
    before = float(net.loss(x, t))
    net.params["W2"] = np.zeros((5, 3))  # a host array, assigned the book's way
    assert float(net.loss(x, t)) == pytest.approx(np.log(3), rel=1e-6)
    np.testing.assert_allclose(to_numpy(net.predict(x)), 1 / 3)
    assert before != pytest.approx(np.log(3), rel=1e-6)
    net.params["W2"] = np.zeros((3, 5))
    with pytest.raises(ValueError, match=r"params\['W2'\] must have shape \(5, 3\)"):
        net.loss(x, t)


def test_accuracy_with_labels_and_one_hot(backend):
    net = make_net(backend, (6, 4, 3), std=1.0)
    x, _ = make_batch(10, 6, 3)
    pred = np.argmax(to_numpy(net.predict(x)), axis=1)
    t = pred.copy()
    t[:3] = (t[:3] + 1) % 3
    assert net.accuracy(x, t) == pytest.approx(0.7)
    assert net.accuracy(x, np.eye(3)[t]) == pytest.approx(0.7)
    assert isinstance(net.accuracy(x, t), float)


def test_repr_shows_configuration(backend):
    text = repr(make_net(backend, activation="relu"))
    for part in ["input_size=7", "hidden_size=5", "output_size=3", "relu", backend.name, "float64"]:
        assert part in text


def test_float32_network(backend):
    net = make_net(backend, dtype="float32")
    x, t = make_batch(4, 7, 3)
    assert net.params["W1"].dtype == backend.xp.float32
    assert net.loss(x, t).dtype == backend.xp.float32


def test_save_and_load_roundtrip(tmp_path, backend):
    net = make_net(backend, activation="relu")
    path = net.save(tmp_path / "net.npz")
    loaded = xpnet.TwoLayerNet.load(path, backend=backend.name, device=backend.device)
    assert loaded.activation == "relu"
    for name in net.params:
        np.testing.assert_array_equal(to_numpy(loaded.params[name]), to_numpy(net.params[name]))
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not an xpnet network"):
        xpnet.TwoLayerNet.load(tmp_path / "other.npz")


def test_numerical_loop_matches_backprop(backend):
    """The loop's central differences differ from backprop by O(h^2) ~ 1e-9 and by
    the +1e-7 inside the book's log, which backprop ignores: that term changes
    the gradient by about 1e-7 / y_t relative (~1e-6 here), so 1e-5 is a bound
    with margin that still catches any real mistake (those are O(1))."""
    net = make_net(backend)
    x, t = make_batch(6, 7, 3)
    numeric = net.numerical_gradient(x, t, method="loop")
    analytic = net.gradient(x, t)
    for name in numeric:
        assert rel_error(numeric[name], analytic[name]) < 1e-5


@pytest.mark.parametrize("grad", ["gradient", "numerical_gradient"])
def test_sgd_steps_reduce_loss_on_strict_device1(grad):
    """Training touches neither NumPy nor the default device (strict raises)."""
    net = xpnet.TwoLayerNet(784, 50, 10, backend="array_api_strict", device="device1", seed=0)
    xp = net.xp
    x, t = make_batch(3, 784, 10, seed=3, sparsity=0.5)
    x = net.backend.from_host(x)
    t = net.backend.from_host(t, dtype=xp.int64)
    losses = [float(net.loss(x, t))]
    for _ in range(3):
        grads = getattr(net, grad)(x, t)
        for name in net.params:
            net.params[name] = net.params[name] - 0.1 * grads[name]
        losses.append(float(net.loss(x, t)))
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))
    assert net.params["W1"].device == net.device


# ---- bad input ---------------------------------------------------------------
@pytest.fixture
def small():
    return xpnet.TwoLayerNet(4, 3, 2, seed=0)


@pytest.mark.parametrize(
    "x, t, error, match",
    [
        (np.zeros((2, 5)), [0, 1], ValueError, r"x must have shape \(N, 4\)"),
        (np.zeros((2, 4, 1)), [0, 1], ValueError, r"x must have shape"),
        (np.zeros((2, 4), dtype=np.int64), [0, 1], TypeError, "x must have a real floating dtype"),
        (np.zeros((2, 4), dtype=bool), [0, 1], TypeError, "x must have a real floating dtype"),
        (np.array([[0.0, np.nan, 0, 0], [0, 0, 0, 0]]), [0, 1], ValueError, "NaN or inf"),
        (np.array([[0.0, np.inf, 0, 0], [0, 0, 0, 0]]), [0, 1], ValueError, "NaN or inf"),
        (np.zeros((2, 4)), [0, 2], ValueError, r"labels must lie in \[0, 2\)"),
        (np.zeros((2, 4)), [-1, 0], ValueError, r"labels must lie in \[0, 2\)"),
        (np.zeros((2, 4)), [0, 1, 1], ValueError, "batch sizes must match"),
        (np.zeros((2, 4)), np.zeros((2, 3)), ValueError, r"one-hot\) must have shape \(2, 2\)"),
        (np.zeros((2, 4)), np.zeros((2, 2, 1)), ValueError, "t must be labels"),
        (np.zeros((2, 4)), [0.5, 1.0], TypeError, "labels must be integers"),
        (np.zeros((0, 4)), np.zeros(0, dtype=int), ValueError, "x is empty"),
    ],
)
def test_bad_batches(small, x, t, error, match):
    with pytest.raises(error, match=match):
        small.loss(x, np.asarray(t))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(input_size=0), ValueError, "input_size must be a positive int"),
        (dict(hidden_size=-3), ValueError, "hidden_size must be a positive int"),
        (dict(output_size=2.5), TypeError, "output_size must be a positive int"),
        (dict(activation="tanh"), ValueError, "activation='tanh' is not known"),
        (dict(dtype="float16"), ValueError, "dtype='float16' is not supported"),
        (dict(backend="mxnet"), ValueError, "backend='mxnet' is not known"),
        (dict(weight_init_std=-1.0), ValueError, "weight_init_std"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    args = dict(input_size=4, hidden_size=3, output_size=2) | kwargs
    with pytest.raises(error, match=match):
        xpnet.TwoLayerNet(**args)


def test_bad_numerical_gradient_arguments(small):
    x, t = np.zeros((2, 4)), np.array([0, 1])
    with pytest.raises(ValueError, match="h must be a positive"):
        small.numerical_gradient(x, t, h=0.0)
    with pytest.raises(ValueError, match="h must be a positive"):
        small.numerical_gradient(x, t, h=-1e-4)
    with pytest.raises(ValueError, match="method='fast' is not known"):
        small.numerical_gradient(x, t, method="fast")
    small.params["W1"] = np.zeros((4, 3), dtype=np.int64)
    with pytest.raises(TypeError, match=r"params\['W1'\] must have a real floating dtype"):
        small.numerical_gradient(x, t)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_input_that_overflows_the_network_dtype_is_refused():
    """1e300 is finite in float64 but inf in a float32 network: refused after the cast."""
    net = xpnet.TwoLayerNet(4, 3, 2, dtype="float32", seed=0)
    x = np.array([[1e300, 0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="NaN or inf"):
        net.predict(x)
