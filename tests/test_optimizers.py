import numpy as np
import pytest

from xpnet.backend import to_numpy
from xpnet.optimizers import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    RMSprop,
    make_optimizer,
)

W0, G1, G2 = np.array([1.0, -2.0]), np.array([0.5, 0.25]), np.array([-1.0, 2.0])


def _run(backend, opt):
    """Two updates with gradients G1 then G2; returns host params after each."""
    params = {"W": backend.from_host(W0)}
    out = []
    for g in (G1, G2):
        opt.update(params, {"W": backend.from_host(g)})
        assert params["W"].device == backend.device
        out.append(to_numpy(params["W"]))
    return out


def _hand(kind):
    """The book's update rules, written out for two steps."""
    w = W0.copy()
    out = []
    if kind == "sgd":
        for g in (G1, G2):
            w = w - 0.1 * g
            out.append(w)
    elif kind == "momentum":
        v = np.zeros(2)
        for g in (G1, G2):
            v = 0.9 * v - 0.1 * g
            w = w + v
            out.append(w)
    elif kind == "nesterov":
        v = np.zeros(2)
        for g in (G1, G2):
            v = 0.9 * v - 0.1 * g
            w = w + 0.81 * v - 1.9 * 0.1 * g
            out.append(w)
    elif kind == "adagrad":
        h = np.zeros(2)
        for g in (G1, G2):
            h = h + g * g
            w = w - 0.1 * g / (np.sqrt(h) + 1e-7)
            out.append(w)
    elif kind == "rmsprop":
        h = np.zeros(2)
        for g in (G1, G2):
            h = 0.99 * h + 0.01 * g * g
            w = w - 0.1 * g / (np.sqrt(h) + 1e-7)
            out.append(w)
    elif kind == "adam":
        m = v = np.zeros(2)
        for i, g in enumerate((G1, G2), start=1):
            lr_t = 0.1 * np.sqrt(1 - 0.999**i) / (1 - 0.9**i)
            m = m + 0.1 * (g - m)
            v = v + 0.001 * (g * g - v)
            w = w - lr_t * m / (np.sqrt(v) + 1e-7)
            out.append(w)
    return out


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_updates_match_hand_computation(backend, kind):
    got = _run(backend, make_optimizer(kind, lr=0.1))
    for a, b in zip(got, _hand(kind), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)  # w - lr*g cancels to ~1e-6


def test_first_adam_step_is_lr_times_sign():
    opt = Adam(lr=0.1)
    params = {"W": W0.copy()}
    opt.update(params, {"W": G1})
    np.testing.assert_allclose(params["W"], W0 - 0.1 * np.sign(G1), rtol=1e-5)


def test_book_defaults_and_repr():
    assert SGD().lr == 0.01 and Momentum().momentum == 0.9 and Nesterov().lr == 0.01
    assert AdaGrad().lr == 0.01 and RMSprop().decay_rate == 0.99
    assert (Adam().lr, Adam().beta1, Adam().beta2) == (0.001, 0.9, 0.999)
    assert repr(Momentum()) == "Momentum(lr=0.01, momentum=0.9)"


def test_state_roundtrip(backend):
    opt = make_optimizer("adam", lr=0.1)
    params = {"W": backend.from_host(W0)}
    opt.update(params, {"W": backend.from_host(G1)})
    clone = make_optimizer("adam", lr=0.1)
    clone.load_state_dict(opt.state_dict(), backend)
    other = {"W": params["W"]}
    opt.update(params, {"W": backend.from_host(G2)})
    clone.update(other, {"W": backend.from_host(G2)})
    np.testing.assert_array_equal(to_numpy(params["W"]), to_numpy(other["W"]))


def test_bad_optimizer_arguments():
    with pytest.raises(ValueError, match="optimizer='lbfgs' is not known"):
        make_optimizer("lbfgs")
    with pytest.raises(ValueError, match="lr must be positive"):
        SGD(lr=0.0)
