import importlib.util

import array_api_compat
import numpy as np
import pytest
from conftest import xp_assert_close

import xpnet
from xpnet.backend import to_numpy
from xpnet.gradient import default_step, numerical_gradient_batched, resolve_step


def _quadratic_setup(backend, shape=(3, 4)):
    """f(w) = sum(a * w**2) + sum(b * w): gradient 2 a w + b exactly, and central
    differences are exact for quadratics up to rounding (~eps * f / h)."""
    rng = np.random.default_rng(0)
    a, b, w = (rng.standard_normal(shape) for _ in range(3))
    return backend.from_host(a), backend.from_host(b), backend.from_host(w), 2 * a * w + b


def test_loop_on_known_gradient(backend, xp):
    a, b, w, expect = _quadratic_setup(backend, (2, 3, 2))
    grad = xpnet.numerical_gradient(lambda v: xp.sum(a * v**2) + xp.sum(b * v), w)
    assert grad.shape == w.shape and grad.device == w.device
    np.testing.assert_allclose(to_numpy(grad), expect, atol=1e-10)


def test_loop_book_style_f_ignores_argument_and_x_is_restored(backend, xp):
    a, b, w, expect = _quadratic_setup(backend)
    if not array_api_compat.is_writeable_array(w):
        pytest.skip("immutable arrays (JAX): f gets a perturbed copy and must use it (documented)")
    original = to_numpy(w).copy()
    grad = xpnet.numerical_gradient(lambda _: xp.sum(a * w**2) + xp.sum(b * w), w)
    np.testing.assert_allclose(to_numpy(grad), expect, atol=1e-10)
    np.testing.assert_array_equal(to_numpy(w), original)  # bit-exact restore


def test_loop_accepts_python_float_results(backend, xp):
    a, b, w, expect = _quadratic_setup(backend)
    grad = xpnet.numerical_gradient(lambda v: float(xp.sum(a * v**2) + xp.sum(b * v)), w)
    np.testing.assert_allclose(to_numpy(grad), expect, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool])
def test_integer_parameters_are_refused(dtype):
    """The book's issue #51: an integer x silently truncates x + h to x."""
    x = np.arange(4).astype(dtype)
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        xpnet.numerical_gradient(lambda v: 0.0, x)
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        numerical_gradient_batched(lambda v: v[:, 0], x)


@pytest.mark.parametrize("h", [0.0, -1e-4, float("nan"), float("inf")])
def test_bad_steps(h):
    with pytest.raises(ValueError, match="h must be a positive finite float"):
        xpnet.numerical_gradient(lambda v: 0.0, np.zeros(2), h=h)
    with pytest.raises(ValueError, match="h must be a positive finite float"):
        numerical_gradient_batched(lambda v: v[:, 0], np.zeros(2), h=h)


def test_non_array_argument_is_named():
    with pytest.raises(TypeError, match="x must be an array .* got list"):
        xpnet.numerical_gradient(lambda v: 0.0, [1.0, 2.0])


def test_step_type_error():
    with pytest.raises(TypeError, match="h must be a positive finite float, got str"):
        xpnet.numerical_gradient(lambda v: 0.0, np.zeros(2), h="1e-4")


def _batched_quadratic(xp, a, b):
    axes = tuple(range(1, a.ndim + 1))
    return lambda stack: xp.sum(a * stack**2, axis=axes) + xp.sum(b * stack, axis=axes)


@pytest.mark.parametrize("chunk_size", [None, 1, 5, 12, 1000])
def test_batched_equals_loop_for_any_chunk(backend, xp, chunk_size):
    a, b, w, expect = _quadratic_setup(backend)
    loop = xpnet.numerical_gradient(lambda v: xp.sum(a * v**2) + xp.sum(b * v), w)
    batched = numerical_gradient_batched(_batched_quadratic(xp, a, b), w, chunk_size=chunk_size)
    assert batched.shape == w.shape and batched.device == w.device
    xp_assert_close(batched, loop, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(batched), expect, atol=1e-10)


def test_batched_budget_sets_chunk(backend, xp):
    a, b, w, _ = _quadratic_setup(backend)
    sizes = []

    def f(stack):
        sizes.append(stack.shape[0])
        return _batched_quadratic(xp, a, b)(stack)

    full = numerical_gradient_batched(f, w)
    assert sizes == [24]  # 12 coordinates, +h and -h, one chunk under the default budget
    sizes.clear()
    small = numerical_gradient_batched(f, w, max_bytes=2 * 2 * 12 * 8 * 3)  # 3 coordinates
    assert sizes == [6, 6, 6, 6]
    np.testing.assert_array_equal(to_numpy(small), to_numpy(full))


def test_batched_halves_chunk_on_out_of_memory(backend, xp):
    a, b, w, _ = _quadratic_setup(backend)
    seen = []

    def f(stack):
        seen.append(stack.shape[0])
        if stack.shape[0] > 6:
            raise MemoryError("simulated device out of memory")
        return _batched_quadratic(xp, a, b)(stack)

    out = numerical_gradient_batched(f, w, chunk_size=12)
    assert seen[:3] == [24, 12, 6]
    reference = numerical_gradient_batched(_batched_quadratic(xp, a, b), w, chunk_size=3)
    np.testing.assert_array_equal(to_numpy(out), to_numpy(reference))


def test_batched_out_of_memory_at_one_coordinate_propagates():
    def f(stack):
        raise MemoryError("nothing fits")

    with pytest.raises(MemoryError):
        numerical_gradient_batched(f, np.zeros(3), chunk_size=2)


def test_batched_checks_f_output_and_chunk_size():
    with pytest.raises(ValueError, match=r"f_batched must return shape \(8,\)"):
        numerical_gradient_batched(lambda s: s[:, :2], np.zeros(4))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        numerical_gradient_batched(lambda s: s[:, 0], np.zeros(4), chunk_size=0)
    with pytest.raises(ValueError, match="max_bytes must be a positive int"):
        numerical_gradient_batched(lambda s: s[:, 0], np.zeros(4), max_bytes=-5)


def test_default_step_depends_on_dtype(xp):
    assert default_step(xp.float64, xp) == 1e-4
    assert 1e-2 < default_step(xp.float32, xp) < 3e-2
    with pytest.warns(UserWarning, match="float32"):
        resolve_step(1e-4, xp.float32, xp)
    assert resolve_step(None, xp.float64, xp, complex_step=True) == 1e-20


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_loop_on_immutable_jax_arrays():
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    w = jnp.asarray([1.0, -2.0, 3.0])
    grad = xpnet.numerical_gradient(lambda v: jnp.sum(v**2), w)
    np.testing.assert_allclose(np.asarray(grad), [2.0, -4.0, 6.0], atol=1e-9)


@pytest.mark.parametrize("bad", [lambda w: w * 2, lambda w: "0.5"], ids=["array", "string"])
def test_f_that_does_not_return_a_scalar_is_one_clear_error(bad):
    import numpy as np

    with pytest.raises((ValueError, TypeError), match="f must return a scalar"):
        xpnet.numerical_gradient(bad, np.zeros(3))


def test_memory_budget_is_capped_at_half_the_free_device_memory(monkeypatch):
    """The GPU branch of the budget, on the CPU: a fake free-memory report."""
    import xpnet.gradient as gradient

    xp = xpnet.resolve_backend("numpy").xp
    monkeypatch.setattr(gradient, "free_memory", lambda xp, device: 3 * 2**20)
    assert gradient.memory_budget(xp, "cpu") == 3 * 2**19  # default 2 GiB, capped
    assert gradient.memory_budget(xp, "cpu", 2**20) == 2**20  # below the cap: kept
    assert gradient.memory_budget(xp, "cpu", 2**30) == 3 * 2**19
    monkeypatch.setattr(gradient, "free_memory", lambda xp, device: None)
    assert gradient.memory_budget(xp, "cpu") == gradient.DEFAULT_HOST_BYTES
    assert gradient.memory_budget(xp, "cpu", host_default=123) == 123


def test_the_float32_step_warning_points_at_the_callers_line():
    net = xpnet.TwoLayerNet(4, 3, 2, dtype="float32", seed=0)
    with pytest.warns(UserWarning, match="swamps the gradient") as caught:
        net.numerical_gradient(np.ones((2, 4)), np.array([0, 1]), h=1e-4)
    assert caught[0].filename == __file__
