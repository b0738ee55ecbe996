import importlib.util
import re

import numpy as np
import pytest
from conftest import (
    assert_on_backend,
    host_params,
    make_batch,
    make_multi,
    make_net,
    make_targets,
    ref_forward,
    ref_gradient,
    ref_loss,
    ref_multi_forward,
    ref_multi_gradient,
    ref_multi_loss,
    xp_assert_close,
)

import xpnet
import xpnet.bench
from xpnet.backend import to_numpy
from xpnet.numerical import model_gradient


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
    for name in net.params:
        assert grads[name].shape == net.params[name].shape
        np.testing.assert_allclose(to_numpy(grads[name]), expect[name], rtol=1e-10, atol=1e-15)


def test_results_stay_on_device(backend):
    net = make_net(backend)
    x, t = make_batch(4, 7, 3)
    assert_on_backend(net.predict(x), backend, shape=(4, 3))
    assert_on_backend(net.loss(x, t), backend, shape=())
    for method in ("gradient", "numerical_gradient"):
        for name, g in getattr(net, method)(x, t).items():
            assert_on_backend(g, backend, shape=net.params[name].shape)


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
        xp_assert_close(numeric[name], analytic[name], rtol=1e-5, backend=backend, err_msg=name)


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


# ---- MultiLayerNet -------------------------------------------------------------
HEAD_CASES = [
    ((6, 5, 3), "sigmoid", "softmax", 0.0),
    ((6, 5, 4, 3), "relu", "softmax", 0.1),
    ((6, 5, 4, 2), "relu", "sigmoid", 0.0),
    ((6, 4, 1), "sigmoid", "sigmoid", 0.05),
    ((6, 5, 4, 3, 2), "sigmoid", "identity", 0.0),
    ((2, 3, 3, 1), "relu", "identity", 0.01),
]


@pytest.mark.parametrize("case", HEAD_CASES, ids=lambda c: f"{len(c[0]) - 2}h-{c[1]}-{c[2]}")
def test_multilayer_forward_loss_backprop_match_reference(backend, case):
    sizes, activation, output, decay = case
    net = make_multi(backend, sizes, activation=activation, output=output, decay=decay)
    x, _ = make_batch(8, sizes[0], sizes[-1])
    t = make_targets(output, 8, sizes[-1])
    p = host_params(net)
    a, _ = ref_multi_forward(p, x, activation)
    y = to_numpy(net.predict(x))
    assert y.shape == (8, sizes[-1])
    if output == "identity":
        np.testing.assert_allclose(y, a[-1], rtol=1e-12)
    loss = net.loss(x, t)
    assert loss.shape == () and loss.device == backend.device
    assert float(loss) == pytest.approx(
        ref_multi_loss(p, x, t, activation, output, decay), rel=1e-12
    )
    grads = net.gradient(x, t)
    expect = ref_multi_gradient(p, x, t, activation, output, decay)
    assert list(grads) == list(net.params)
    for name in expect:
        np.testing.assert_allclose(to_numpy(grads[name]), expect[name], rtol=1e-10, atol=1e-15)


def test_multilayer_params_are_named_per_layer_and_honoured(backend):
    net = make_multi(backend, (5, 4, 3, 2))
    assert list(net.params) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert tuple(net.params["W2"].shape) == (4, 3)
    x, t = make_batch(4, 5, 2)
    net.params["W3"] = np.zeros((3, 2))
    net.params["b3"] = np.zeros(2)
    assert float(net.loss(x, t)) == pytest.approx(np.log(2), rel=1e-6)
    net.params["W3"] = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"params\['W3'\] must have shape \(3, 2\)"):
        net.loss(x, t)


@pytest.mark.parametrize(
    "init, scale",
    [
        ("relu", lambda n: np.sqrt(2 / n)),
        ("He", lambda n: np.sqrt(2 / n)),
        ("sigmoid", lambda n: np.sqrt(1 / n)),
        ("xavier", lambda n: np.sqrt(1 / n)),
        (0.01, lambda n: 0.01),
        (np.float32(0.5), lambda n: np.float32(0.5)),
    ],
)
def test_weight_init_std_as_the_book(backend, init, scale):
    net = xpnet.MultiLayerNet(
        7, [5, 4], 3, weight_init_std=init, backend=backend.name, device=backend.device, seed=3
    )
    rng = np.random.default_rng(3)
    for k, (n_in, n_out) in enumerate([(7, 5), (5, 4), (4, 3)], 1):
        expect = float(scale(n_in)) * rng.standard_normal((n_in, n_out))
        np.testing.assert_allclose(to_numpy(net.params[f"W{k}"]), expect, rtol=1e-15)
        assert not np.any(to_numpy(net.params[f"b{k}"]))


def test_two_layer_net_is_the_two_layer_case(backend):
    """Same seed and std: TwoLayerNet and MultiLayerNet([H], sigmoid) are one net."""
    two = make_net(backend, (9, 6, 4), std=0.3, seed=5)
    multi = xpnet.MultiLayerNet(
        9, [6], 4, "sigmoid", 0.3, backend=backend.name, device=backend.device, seed=5
    )
    assert isinstance(two, xpnet.MultiLayerNet)
    x, t = make_batch(5, 9, 4)
    for name in two.params:
        np.testing.assert_array_equal(to_numpy(two.params[name]), to_numpy(multi.params[name]))
    assert float(two.loss(x, t)) == float(multi.loss(x, t))
    g2, gm = two.numerical_gradient(x, t), multi.numerical_gradient(x, t)
    for name in g2:
        np.testing.assert_array_equal(to_numpy(g2[name]), to_numpy(gm[name]))


def test_sigmoid_head_accuracy_counts_outputs(backend):
    net = make_multi(backend, (5, 4, 3), output="sigmoid")
    x, _ = make_batch(6, 5, 3)
    y = to_numpy(net.predict(x))
    t = (y > 0.5).astype(float)
    t[0, 0] = 1 - t[0, 0]
    t[3, 2] = 1 - t[3, 2]
    assert net.accuracy(x, t) == pytest.approx(1 - 2 / 18)
    assert isinstance(net.accuracy(x, t), float)


def test_single_output_heads_take_flat_targets(backend):
    x, _ = make_batch(5, 4, 1)
    binary = make_multi(backend, (4, 3, 1), output="sigmoid")
    t = np.array([0, 1, 1, 0, 1])
    assert float(binary.loss(x, t)) == float(binary.loss(x, t[:, None].astype(float)))
    regression = make_multi(backend, (4, 3, 1), output="identity")
    v = np.linspace(-1, 1, 5)
    assert float(regression.loss(x, v)) == float(regression.loss(x, v[:, None]))


def test_identity_head_has_no_accuracy(backend):
    net = make_multi(backend, (4, 3, 2), output="identity")
    x, _ = make_batch(3, 4, 2)
    with pytest.raises(ValueError, match="accuracy is not defined for output='identity'"):
        net.accuracy(x, np.zeros((3, 2)))


def test_online_learning_one_sample_per_step(backend):
    """The course's regression exercise: batch size 1, identity head, any depth."""
    net = make_multi(backend, (2, 3, 3, 1), activation="sigmoid", output="identity", std=1.0)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (200, 2))
    t = (x[:, 0] * x[:, 1])[:, None]
    before = float(net.loss(x, t))
    for i in range(100):
        grads = net.numerical_gradient(x[i : i + 1], t[i : i + 1])
        for name in net.params:
            net.params[name] = net.params[name] - 0.3 * grads[name]
    assert float(net.loss(x, t)) < 0.8 * before


def test_weight_decay_adds_to_loss_and_gradients(backend):
    x, _ = make_batch(5, 6, 3)
    t = make_targets("softmax", 5, 3)
    plain = make_multi(backend, (6, 4, 3), decay=0.0)
    decayed = make_multi(backend, (6, 4, 3), decay=0.5)
    squares = sum(np.sum(v**2) for k, v in host_params(plain).items() if k.startswith("W"))
    assert float(decayed.loss(x, t)) == pytest.approx(
        float(plain.loss(x, t)) + 0.25 * squares, rel=1e-13
    )
    # the loop differences the whole loss, decay included, the same way on every
    # backend (test_gradient.py); on array-api-strict it costs 1 s, so NumPy runs it
    methods = ("structured", "complex") + (("loop",) if backend.name == "numpy" else ())
    for method in methods:
        diff = {
            k: to_numpy(decayed.numerical_gradient(x, t, method=method)[k])
            - to_numpy(plain.numerical_gradient(x, t, method=method)[k])
            for k in plain.params
        }
        for name, value in diff.items():
            expect = 0.5 * host_params(plain)[name] if name.startswith("W") else 0 * value
            np.testing.assert_allclose(value, expect, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("output", ["softmax", "sigmoid", "identity"])
def test_multilayer_save_and_load_keep_everything(tmp_path, backend, output):
    net = make_multi(backend, (5, 4, 3, 2), activation="sigmoid", output=output, decay=0.25)
    path = net.save(tmp_path / "net.npz")
    loaded = xpnet.MultiLayerNet.load(path, backend=backend.name, device=backend.device)
    assert (loaded.sizes, loaded.activation, loaded.output, loaded.weight_decay_lambda) == (
        (5, 4, 3, 2),
        "sigmoid",
        output,
        0.25,
    )
    for name in net.params:
        np.testing.assert_array_equal(to_numpy(loaded.params[name]), to_numpy(net.params[name]))
    with pytest.raises(ValueError, match="TwoLayerNet needs one hidden layer and softmax"):
        xpnet.TwoLayerNet.load(path)


def test_two_layer_file_loads_as_multilayer(tmp_path):
    path = xpnet.TwoLayerNet(4, 3, 2, seed=0).save(tmp_path / "two.npz")
    net = xpnet.MultiLayerNet.load(path)
    assert net.sizes == (4, 3, 2) and net.output == "softmax" and net.activation == "sigmoid"


def test_multilayer_repr():
    text = repr(xpnet.MultiLayerNet(4, [3, 2], 2, output="identity", weight_decay_lambda=0.1))
    for part in ["hidden_size_list=[3, 2]", "output='identity'", "weight_decay_lambda=0.1", "relu"]:
        assert part in text


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(hidden_size_list=50), TypeError, r"list of positive ints.*\[50\]"),
        (dict(hidden_size_list="50"), TypeError, "hidden_size_list must be a list"),
        (dict(hidden_size_list=[3, 0]), ValueError, r"hidden_size_list\[1\] must be a positive"),
        (dict(hidden_size_list=[3, 2.5]), TypeError, r"hidden_size_list\[1\] must be a positive"),
        (dict(output="tanh"), ValueError, "output='tanh' is not known"),
        (dict(activation="tanh"), ValueError, "activation='tanh' is not known"),
        (dict(weight_init_std="kaiming"), ValueError, "weight_init_std='kaiming' is not known"),
        (dict(weight_init_std=float("inf")), ValueError, "weight_init_std must be a finite"),
        (dict(weight_init_std=-0.1), ValueError, "weight_init_std must be a finite"),
        (dict(weight_decay_lambda=-0.1), ValueError, "weight_decay_lambda must be a finite"),
        (
            dict(weight_decay_lambda=float("nan")),
            ValueError,
            "weight_decay_lambda must be a finite",
        ),
    ],
)
def test_bad_multilayer_arguments(kwargs, error, match):
    args = dict(input_size=4, hidden_size_list=[3], output_size=2) | kwargs
    with pytest.raises(error, match=match):
        xpnet.MultiLayerNet(**args)


@pytest.mark.parametrize(
    "output, t, error, match",
    [
        ("sigmoid", np.array([[0, 1], [1, 0.5], [0, 0]]), ValueError, "only 0 and 1"),
        ("sigmoid", np.array([[0, 1, 0]] * 3), ValueError, r"shape \(3, 2\)"),
        ("sigmoid", np.array([0, 1, 1]), ValueError, r"shape \(3, 2\)"),
        ("identity", np.array([0, 1, 1]), TypeError, "float targets for output='identity'"),
        ("identity", np.zeros((3, 3)), ValueError, r"shape \(3, 2\)"),
        ("identity", np.array([[0, np.nan]] * 3), ValueError, "NaN or inf"),
        ("softmax", np.array([0, 2, 1]), ValueError, r"labels must lie in \[0, 2\)"),
    ],
)
def test_targets_that_do_not_fit_the_head(output, t, error, match):
    net = xpnet.MultiLayerNet(4, [3], 2, output=output, seed=0)
    before = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(error, match=match):
        net.loss(np.zeros((3, 4)), t)
    with pytest.raises(error, match=match):
        net.numerical_gradient(np.zeros((3, 4)), t)
    for name in before:
        np.testing.assert_array_equal(net.params[name], before[name])


# ---- faults a user can hit (trustworthy runs) ----------------------------------
@pytest.mark.parametrize(
    "t, match",
    [
        (np.array([[0.0, 0.0], [0.0, 1.0]]), "exactly one 1 per row"),
        (np.array([[0.3, 0.7], [0.0, 1.0]]), "exactly one 1 per row"),
        (np.array([[np.nan, 1.0], [0.0, 1.0]]), "exactly one 1 per row"),
        (np.array([[1.0, 1.0], [0.0, 1.0]]), "exactly one 1 per row"),
    ],
    ids=["all-zero", "soft", "nan", "two-ones"],
)
def test_one_hot_targets_that_are_not_one_hot_are_refused(small, t, match):
    with pytest.raises(ValueError, match=match):
        small.loss(np.zeros((2, 4)), t)


def test_nan_in_params_is_refused_with_its_name(small):
    w = np.asarray(small.params["W2"]).copy()
    w[0, 0] = np.nan
    small.params["W2"] = w
    with pytest.raises(ValueError, match=r"params\['W2'\] contains NaN or inf"):
        small.loss(np.zeros((2, 4)), np.array([0, 1]))


@pytest.mark.parametrize("seed, error", [("a", TypeError), (-1, ValueError), (1.5, TypeError)])
def test_bad_seed_names_seed(seed, error):
    with pytest.raises(error, match="seed must be an int"):
        xpnet.TwoLayerNet(4, 3, 2, seed=seed)


def test_numpy_float32_std_is_accepted_and_inf_refused():
    xpnet.TwoLayerNet(4, 3, 2, np.float32(0.01), seed=0)
    with pytest.raises(ValueError, match="weight_init_std must be a finite"):
        xpnet.TwoLayerNet(4, 3, 2, float("inf"))


@pytest.mark.parametrize("h", [1e-300, 1e-13, 1e10, 2.0])
@pytest.mark.parametrize("method", ["structured", "loop", "batched"])
def test_steps_that_cannot_work_are_refused_by_every_method(small, h, method):
    with pytest.raises(ValueError, match=re.escape(f"h={h:g} cannot give a float64 central")):
        small.numerical_gradient(np.ones((2, 4)), np.array([0, 1]), h=h, method=method)


def test_largest_allowed_step_gives_the_same_finite_result_in_every_method(small):
    x, t = np.ones((2, 4)), np.array([0, 1])
    loop = small.numerical_gradient(x, t, h=1.0, method="loop")
    for method in ("structured", "batched"):
        got = small.numerical_gradient(x, t, h=1.0, method=method)
        for name in loop:
            assert np.all(np.isfinite(got[name]))
            xp_assert_close(got[name], loop[name], rtol=1e-10, err_msg=name)


def test_complex_step_keeps_its_tiny_step(small):
    small.numerical_gradient(np.ones((2, 4)), np.array([0, 1]), h=1e-30, method="complex")


def test_n_threads_that_is_not_an_int_names_n_threads(small):
    with pytest.raises(TypeError, match="n_threads must be a positive int, got str 'a'"):
        small.numerical_gradient(np.ones((2, 4)), np.array([0, 1]), n_threads="a")


def test_crafted_params_file_is_refused_from_its_headers(tmp_path):
    """A tiny file claiming 20000x20000 layers is refused before anything is built."""
    import time

    path = tmp_path / "crafted.npz"
    np.savez(
        path,
        sizes=np.array([20000, 20000, 10]),
        activation=np.asarray("relu"),
        W1=np.zeros((2, 2)),
        b1=np.zeros(2),
        W2=np.zeros((2, 2)),
        b2=np.zeros(2),
    )
    start = time.perf_counter()
    with pytest.raises(
        ValueError, match=r"W1 is stored with shape \(2, 2\).*needs \(20000, 20000\)"
    ):
        xpnet.MultiLayerNet.load(path)
    assert time.perf_counter() - start < 2.0  # refused from the headers, nothing allocated


@pytest.mark.parametrize(
    "content", [b"", b"just text", b"PK\x03\x04broken"], ids=["empty", "text", "zip"]
)
def test_damaged_params_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "params.npz"
    path.write_bytes(content)
    for cls in (xpnet.TwoLayerNet, xpnet.MultiLayerNet):
        with pytest.raises(ValueError, match="params.npz is not an xpnet file or is damaged"):
            cls.load(path)


def test_numerical_gradient_runs_one_blas_thread_and_restores_it(monkeypatch):
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []
    net = xpnet.TwoLayerNet(4, 3, 2, seed=0)
    real = xpnet.model.stacked_loss

    def numpy_blas():  # NumPy's own BLAS (SciPy may have loaded another one)
        info = threadpool_info()
        return {
            i["num_threads"] for i in info if i["user_api"] == "blas" and "numpy" in i["filepath"]
        }

    def spy(*args, **kwargs):
        seen.append(numpy_blas())
        return real(*args, **kwargs)

    monkeypatch.setattr(xpnet.model, "stacked_loss", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        net.numerical_gradient(np.ones((2, 4)), np.array([0, 1]), method="loop")
        after = numpy_blas()
    assert seen and all(s == {1} for s in seen)
    assert after == {2}


# ---- memory: the extra memory of a numerical gradient is bounded ----------------
def _peak_extra_bytes(net, x, t, method, max_bytes):
    import tracemalloc

    batch, layers = net.batch(x, t), net.checked_layers()
    h = 1e-20 if method == "complex" else 1e-4
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        # one thread: every thread holds its own block and chunk (documented)
        model_gradient(
            net.spec, layers, batch, h=h, method=method, max_bytes=max_bytes, n_threads=1
        )
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    result = sum(W.nbytes + b.nbytes for W, b in layers)  # the gradient itself
    return peak, batch.x.nbytes, result


@pytest.fixture(scope="module")
def warm():
    """One call of each method first: NumPy's and the libraries' one-time caches
    are not the gradient's memory."""
    x, t = xpnet.bench.mnist_like_batch(20, 36, 10)
    for method in ("structured", "complex", "batched", "loop"):
        _peak_extra_bytes(xpnet.MultiLayerNet(36, [6], 10, seed=0), x, t, method, 2**16)


@pytest.mark.slow  # 20 s: tracemalloc slows every allocation
@pytest.mark.parametrize("method", ["structured", "complex"])
@pytest.mark.parametrize("hidden", [[20], [20, 10]], ids=["2-layer", "3-layer"])
def test_structured_memory_stays_within_max_bytes_plus_x(warm, method, hidden):
    """600 MNIST-like images (x: 3.8 MB) with max_bytes=1 MiB: samples are
    processed in blocks, so the extra memory is max_bytes plus a copy of x at most
    (it was ~200 MB for 5,000 images before the blocks)."""
    x, t = xpnet.bench.mnist_like_batch(600, 784, 10)
    net = xpnet.MultiLayerNet(784, hidden, 10, "relu", 0.1, seed=0)
    peak, x_bytes, result = _peak_extra_bytes(net, x, t, method, 2**20)
    assert peak <= 2**20 + x_bytes + result, (peak, x_bytes)
    assert peak <= 2**20 + x_bytes // 2 + result  # far below a copy


@pytest.mark.slow  # tracemalloc, as every memory test
@pytest.mark.parametrize("method", ["batched", "loop", "structured"])
def test_every_method_stays_within_max_bytes_plus_two_copies_of_x(warm, method):
    """A small net, so the loop and batched are quick; max_bytes=256 KiB is above
    what one perturbed forward pass of the 200 samples needs (a chunk cannot be
    smaller than one)."""
    x, t = xpnet.bench.mnist_like_batch(200, 36, 10)
    net = xpnet.MultiLayerNet(36, [6, 5], 10, "sigmoid", 0.1, seed=0)
    peak, x_bytes, result = _peak_extra_bytes(net, x, t, method, 2**18)
    assert peak <= 2**18 + 2 * x_bytes + result, (peak, x_bytes)


# ---- hostile or unusual inputs at the boundary -----------------------------------
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_np_matrix_inputs_and_targets_are_plain_arrays():
    net = xpnet.MultiLayerNet(3, [4], 2, output="identity", seed=0)
    x = np.random.default_rng(0).random((5, 3))
    t = np.random.default_rng(1).random((5, 2))
    plain = float(net.loss(x, t))
    assert float(net.loss(np.asmatrix(x), np.asmatrix(t))) == plain


def test_masked_arrays_are_refused_by_name():
    net = xpnet.MultiLayerNet(3, [4], 2, seed=0)
    x = np.ma.masked_array(np.ones((2, 3)), mask=[[0, 1, 0], [0, 0, 0]])
    with pytest.raises(TypeError, match="x is a masked array"):
        net.loss(x, np.array([0, 1]))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_meta_tensors_are_one_clear_error():
    import torch

    net = xpnet.MultiLayerNet(3, [4], 2, seed=0, backend="torch")
    with pytest.raises(ValueError, match="x is a torch tensor on the 'meta' device"):
        net.loss(torch.ones((2, 3), device="meta", dtype=torch.float64), np.array([0, 1]))


def test_numpy_integers_are_sizes_too():
    net = xpnet.MultiLayerNet(3, [4], 2, seed=0)
    x, t = np.ones((2, 3)), np.array([0, 1])
    a = net.numerical_gradient(x, t, max_bytes=np.int64(10**6), n_threads=np.int32(1))
    b = net.numerical_gradient(x, t, max_bytes=10**6, n_threads=1)
    for name in a:
        assert np.array_equal(a[name], b[name])


@pytest.mark.parametrize("h", [1e300, 10.0, 1e-320])
def test_complex_steps_that_cannot_work_are_refused(h):
    net = xpnet.MultiLayerNet(3, [4], 2, seed=0)
    with pytest.raises(ValueError, match="cannot give a float64 complex step"):
        net.numerical_gradient(np.ones((2, 3)), np.array([0, 1]), method="complex", h=h)
