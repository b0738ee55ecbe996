"""The model core: forward pass, loss, backprop and stacked losses, unchecked
internals that the network classes, the trainer and the gradients share.

References are the independent NumPy formulas of conftest (``ref_multi_*``);
backprop against them to 1e-10 (rounding of a few matmuls), the stacked loss
against the loss at each stacked value bit for bit on NumPy (same arithmetic).
"""

import numpy as np
import pytest
from conftest import (
    count_array_ops,
    host_params,
    make_batch,
    make_multi,
    make_targets,
    ref_multi_gradient,
    xp_assert_close,
)

import xpnet
from xpnet import model
from xpnet.optimizers import SGD


@pytest.mark.parametrize("output", ["softmax", "sigmoid", "identity"])
def test_backprop_is_the_analytic_gradient(backend, output):
    net = make_multi(backend, (6, 5, 4, 3), activation="relu", output=output, decay=0.02)
    x, _ = make_batch(7, 6, 3, seed=1)
    t = make_targets(output, 7, 3, seed=1)
    batch = net.batch(x, t)
    grads = model.params_of(model.backprop(net.spec, net.checked_layers(), batch))
    expected = ref_multi_gradient(host_params(net), x, t, "relu", output, 0.02)
    for name in expected:
        xp_assert_close(grads[name], expected[name], rtol=1e-10, backend=backend, err_msg=name)


def test_a_network_without_hidden_layers_is_logistic_regression(backend):
    net = xpnet.MultiLayerNet(
        5, [], 3, backend=backend.name, device=backend.device, seed=0, weight_init_std=0.5
    )
    x, t = make_batch(6, 5, 3, seed=2)
    assert list(net.params) == ["W1", "b1"]
    loop = net.numerical_gradient(x, t, method="loop")
    exact = net.gradient(x, t)
    for name in loop:
        # backprop leaves out the book's +1e-7 inside the log: ~1e-6 relative
        xp_assert_close(loop[name], exact[name], rtol=1e-5, backend=backend, err_msg=name)
        xp_assert_close(
            net.numerical_gradient(x, t)[name], loop[name], rtol=1e-8, backend=backend, err_msg=name
        )


def test_stacked_loss_is_the_loss_at_each_stacked_value(backend):
    xp = backend.xp
    net = make_multi(backend, (4, 3, 2), activation="sigmoid", decay=0.1)
    x, t = make_batch(5, 4, 2, seed=3)
    batch, layers = net.batch(x, t), net.checked_layers()
    W2 = layers[1][0]
    stack = xp.stack([W2, 2.0 * W2, W2 + 0.5])
    losses = model.stacked_loss(net.spec, layers, batch, 1, "W", stack)
    for k in range(3):
        moved = [layers[0], (stack[k, ...], layers[1][1])]
        expected = model.loss(net.spec, moved, batch)
        assert abs(float(losses[k]) - float(expected)) <= 1e-14 * abs(float(expected))


def test_batch_take_and_rows(backend):
    net = make_multi(backend, (4, 3, 2))
    x, t = make_batch(6, 4, 2, seed=4)
    batch = net.batch(x, t)
    index = backend.from_host(np.array([4, 1]), dtype=backend.xp.int64)
    taken = batch.take(index)
    assert taken.size == 2
    np.testing.assert_array_equal(xpnet.to_numpy(taken.x), x[[4, 1]])
    assert batch.rows(1, 3).size == 2


def test_a_backprop_training_step_issues_few_array_operations():
    """The trainer's unchecked step: a minibatch taken on the device, backprop and
    an SGD update of every parameter — at most 40 array operations (GPU kernel
    launches) for the book's net, counted on array-api-strict."""
    net = xpnet.TwoLayerNet(784, 50, 10, backend="array_api_strict", device="device1", seed=0)
    x, t = make_batch(200, 784, 10, seed=0)
    train = net.batch(x, t)
    index = net.backend.from_host(np.arange(100), dtype=net.xp.int64)
    optimizer = SGD(lr=0.1)

    def step():
        minibatch = train.take(index)
        grads = model.backprop(net.spec, model.layers_of(net.params), minibatch)
        optimizer.update(net.params, model.params_of(grads))

    step()
    assert count_array_ops(step) <= 40
