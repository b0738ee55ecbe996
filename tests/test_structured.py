"""The fast numerical gradients against the reference loop and exact gradients.

Tolerances: every method computes the same central differences as the loop,
so they differ only by rounding: each loss is O(1) with error ~1e-16, divided
by 2h = 2e-4, i.e. ~1e-12 absolute on gradients of ~1e-2: 1e-7 normwise is
the issue's bound with a wide margin. The complex step has no cancellation:
against the exact gradient it is good to ~1e-14; we require 1e-12.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import (
    assert_on_backend,
    host_loop_gradient,
    host_params,
    make_batch,
    make_multi,
    make_net,
    make_targets,
    ref_gradient,
    ref_multi_gradient,
    rel_error,
    xp_assert_close,
)

import xpnet
import xpnet.hidden
import xpnet.work
from xpnet import block, model
from xpnet.backend import to_numpy
from xpnet.structured import structured_gradient

CASES = [
    # sizes, batch, sparsity, activation, one_hot
    ((7, 5, 3), 6, 0.5, "sigmoid", False),
    ((7, 5, 3), 6, 0.5, "relu", True),
    ((12, 4, 6), 1, 0.6, "sigmoid", True),
    ((5, 9, 2), 10, 0.0, "relu", False),
    ((10, 3, 4), 5, 0.9, "sigmoid", False),
]


def _targets(t, c, one_hot):
    return np.eye(c)[t] if one_hot else t


@pytest.mark.parametrize("method", ["batched", "structured", "complex"])
@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"{c[0]}-n{c[1]}-{c[3]}-{'1hot' if c[4] else 'lab'}"
)
def test_methods_equal_loop(backend, method, case):
    sizes, n, sparsity, activation, one_hot = case
    net = make_net(backend, sizes, activation=activation)
    x, t = make_batch(n, sizes[0], sizes[2], seed=n, sparsity=sparsity)
    t = _targets(t, sizes[2], one_hot)
    loop = host_loop_gradient(net, x, t)
    fast = net.numerical_gradient(x, t, method=method)
    for name in loop:
        assert_on_backend(fast[name], backend, shape=loop[name].shape)
        xp_assert_close(fast[name], loop[name], rtol=1e-7, backend=backend, err_msg=name)


def test_auto_is_the_structured_method(backend):
    net = make_net(backend, (7, 5, 3))
    x, t = make_batch(6, 7, 3, seed=2)
    auto, structured = (
        net.numerical_gradient(x, t),
        net.numerical_gradient(x, t, method="structured"),
    )
    for name in auto:
        assert np.array_equal(to_numpy(auto[name]), to_numpy(structured[name]))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-n{c[1]}-{c[3]}")
def test_complex_step_equals_exact_gradient_of_book_loss(backend, case):
    sizes, n, sparsity, activation, one_hot = case
    net = make_net(backend, sizes, activation=activation)
    x, t = make_batch(n, sizes[0], sizes[2], seed=n + 1, sparsity=sparsity)
    exact = ref_gradient(host_params(net), x, t, activation, log_eps=1e-7)
    got = net.numerical_gradient(x, _targets(t, sizes[2], one_hot), method="complex")
    for name in exact:
        xp_assert_close(got[name], exact[name], rtol=1e-12, backend=backend, err_msg=name)


def test_complex_step_is_not_backprop_in_disguise(backend):
    """With the +1e-7 the exact gradient differs from backprop's: the complex
    step must land on the former, far closer than on the latter."""
    net = make_net(backend, (6, 4, 3), std=2.0)
    x, t = make_batch(5, 6, 3, seed=9)
    p = host_params(net)
    with_eps = ref_gradient(p, x, t, log_eps=1e-7)
    backprop = ref_gradient(p, x, t, log_eps=0.0)
    got = net.numerical_gradient(x, t, method="complex")
    assert rel_error(got["W2"], with_eps["W2"]) < 1e-3 * rel_error(got["W2"], backprop["W2"])


# Chunks and threads change only the summation order of a matmul (~1e-16
# relative). Sample blocks (a small max_bytes) also recompute the cached forward
# pass on fewer rows, which BLAS may round differently in the last bit: each
# perturbed-loss difference (~h * |g| ~ 1e-6) then moves by ~eps * L ~ 1e-16, so
# ~1e-10 relative; still far inside the 1e-7 that every method keeps to the loop.
_BLOCKS = 1e-9


def _structured(net, x, t, method, **kwargs):
    """The structured gradient with explicit budgets (chunk_bytes is internal)."""
    batch = net.batch(x, t)
    mode = "central" if method == "structured" else "complex"
    h = 1e-4 if mode == "central" else 1e-20
    blocks = structured_gradient(
        net.spec, net.checked_layers(), batch.x, batch.t, h=h, mode=mode, **kwargs
    )
    return model.params_of([(block[:-1, :], block[-1, :]) for block in blocks])


@pytest.mark.parametrize("method", ["structured", "complex"])
def test_chunking_and_threads_do_not_change_result(backend, xp, method):
    net = make_net(backend, (8, 5, 4))
    x, t = make_batch(4, 8, 4, seed=5, sparsity=0.5)
    base = net.numerical_gradient(x, t, method=method)
    for kwargs, bound in [
        (dict(max_bytes=2**30), 1e-13),
        (dict(n_threads=3, max_bytes=2**30, chunk_bytes=4096), 1e-13),
        # many cores: the default chunk (max_bytes // 8) within a thread's share,
        # so the blocks stay whole (they were one sample each on 16 cores)
        (dict(n_threads=16, max_bytes=2**30), 1e-13),
        (dict(max_bytes=2**30, chunk_bytes=1), 1e-13),
        (dict(max_bytes=4096), _BLOCKS),
        (dict(max_bytes=1), _BLOCKS),
    ]:
        other = _structured(net, x, t, method, **kwargs)
        for name in base:
            xp_assert_close(other[name], base[name], rtol=bound, err_msg=(kwargs, name))


def test_batched_chunk_sizes_agree(backend):
    """NumPy evaluates every stacked network alike: bit-identical. XLA (JAX) may
    round the loss differently for another batch shape (~1e-16), amplified by
    1 / 2h: ~1e-12 relative. 1e-10 bounds both, far below the 1e-7 of methods."""
    net = make_net(backend, (8, 4, 3))
    x, t = make_batch(5, 8, 3)
    a = net.numerical_gradient(x, t, method="batched", chunk_size=1)
    b = net.numerical_gradient(x, t, method="batched", max_bytes=10**9)
    for name in a:
        xp_assert_close(a[name], b[name], rtol=1e-10, backend=backend)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_repeated_input_values_are_shared_exactly(backend, activation):
    """8-bit-like inputs repeat values within a sample (and 1.0 equals the bias
    input): each distinct (sample, value) is evaluated once and shared."""
    net = make_net(backend, (12, 5, 3), activation=activation)
    rng = np.random.default_rng(4)
    x = rng.integers(0, 4, (6, 12)) / 3.0  # values 0, 1/3, 2/3, 1: many repeats
    t = rng.integers(0, 3, 6)
    loop = host_loop_gradient(net, x, t)
    for method in ("structured", "complex"):
        fast = net.numerical_gradient(x, t, method=method)
        for name in loop:
            xp_assert_close(
                fast[name], loop[name], rtol=1e-7, backend=backend, err_msg=(method, name)
            )
    # inputs with equal columns have equal W1 gradient rows, bit for bit
    x[:, 5] = x[:, 2]
    fast = xpnet.to_numpy(net.numerical_gradient(x, t)["W1"])
    assert np.array_equal(fast[5], fast[2])


def test_inputs_all_zero_and_all_zero_features(backend):
    net = make_net(backend, (6, 4, 3))
    x, t = make_batch(4, 6, 3)
    x[:, 2] = 0.0  # a feature that is zero for every sample: W1 row 2 has no effect
    for batch in (x, np.zeros_like(x)):
        loop = host_loop_gradient(net, batch, t)
        fast = net.numerical_gradient(batch, t)
        assert np.all(to_numpy(fast["W1"])[2] == 0.0)
        for name in loop:
            xp_assert_close(fast[name], loop[name], rtol=1e-7, backend=backend)


def test_float32_accuracy_is_as_documented(backend):
    """float32 central differences with the dtype's default h are good to ~1e-3
    normwise on this net; the complex step in complex64 to ~1e-5."""
    net64 = make_net(backend, (20, 8, 4), std=0.5)
    net32 = make_net(backend, (20, 8, 4), std=0.5, dtype="float32")
    x, t = make_batch(16, 20, 4, seed=2)
    exact = ref_gradient(host_params(net64), x, t, log_eps=1e-7)
    central = net32.numerical_gradient(x, t)
    complex_step = net32.numerical_gradient(x, t, method="complex")
    for name in exact:
        assert central[name].dtype == backend.xp.float32
        assert rel_error(central[name], exact[name]) < 2e-2, name
        assert rel_error(complex_step[name], exact[name]) < 1e-4, name


def test_structured_rejects_unknown_mode(backend):
    net = make_net(backend)
    x, t = make_batch(2, 7, 3)
    batch, layers = net.batch(x, t), net.checked_layers()
    with pytest.raises(ValueError, match="mode=.forward. is not known"):
        structured_gradient(net.spec, layers, batch.x, batch.t, mode="forward")
    with pytest.raises(ValueError, match="n_threads must be a positive int"):
        structured_gradient(net.spec, layers, batch.x, batch.t, n_threads=0)


@pytest.mark.parametrize("hidden", [[7], [6, 5]], ids=["2-layer", "3-layer"])
def test_out_of_memory_retries_only_the_failing_chunk(backend, monkeypatch, hidden):
    import xpnet.heads

    net = make_multi(backend, (30, *hidden, 4), activation="relu")
    x, t = make_batch(9, 30, 4, seed=5)
    expected = net.numerical_gradient(x, t, max_bytes=2**22, n_threads=1)
    real_series = xpnet.heads.Softmax.series_differences
    real_columns = xpnet.heads.Softmax.column_differences
    real_cache = xpnet.heads.Softmax.cache
    sizes, caches = [], []

    def flaky_series(self, cache, coefficients, dz, *args):
        sizes.append(dz.shape[-2])  # ([S,] pairs, 1): the chunk's pairs
        if dz.shape[-2] > 2:
            raise MemoryError("simulated: chunk does not fit")
        return real_series(self, cache, coefficients, dz, *args)

    def flaky_columns(self, cache, delta, combine):
        if delta.shape[1] > 1:  # more than one input of the last layer at once
            raise MemoryError("simulated")
        return real_columns(self, cache, delta, combine)

    def counted_cache(self, a, t):
        caches.append(1)
        return real_cache(self, a, t)

    monkeypatch.setattr(xpnet.heads.Softmax, "series_differences", flaky_series)
    monkeypatch.setattr(xpnet.heads.Softmax, "column_differences", flaky_columns)
    monkeypatch.setattr(xpnet.heads.Softmax, "cache", counted_cache)
    got = net.numerical_gradient(x, t, max_bytes=2**22, n_threads=1)
    assert len(caches) == 1  # the forward pass was not redone
    assert max(sizes) > 2 and sizes.count(1) + sizes.count(2) > len(hidden)  # halved
    for name in expected:
        xp_assert_close(got[name], expected[name], rtol=1e-13, backend=backend, err_msg=name)


@pytest.mark.parametrize("hidden", [[7], [6, 5]], ids=["2-layer", "3-layer"])
def test_input_sums_out_of_memory_sum_half_a_chunk_of_features(backend, monkeypatch, hidden):
    net = make_multi(backend, (30, *hidden, 4), activation="sigmoid")
    x, t = make_batch(9, 30, 4, seed=6)
    expected = net.numerical_gradient(x, t, max_bytes=2**22, n_threads=1)
    real_in_pieces, halves = xpnet.work.Context.in_pieces, []

    def flaky_in_pieces(self, bounds, compute):
        if compute.__name__ != "chunk_sums":  # the input sums' chunks of features
            return real_in_pieces(self, bounds, compute)

        def flaky(lo, hi):
            if hi - lo > 1:
                raise MemoryError("simulated: chunk does not fit")
            halves.append((lo, hi))
            return compute(lo, hi)

        return real_in_pieces(self, bounds, flaky)

    monkeypatch.setattr(xpnet.work.Context, "in_pieces", flaky_in_pieces)
    got = net.numerical_gradient(x, t, max_bytes=2**22, n_threads=1)
    assert len(halves) >= 30 + len(hidden) - 1  # one feature at a time
    for name in expected:
        xp_assert_close(got[name], expected[name], rtol=1e-13, backend=backend, err_msg=name)


def test_out_of_memory_with_nothing_left_to_halve_propagates(monkeypatch):

    def broken(*args):
        raise MemoryError("never fits")

    # every chunk of the hidden layer's series fails, down to single pairs
    monkeypatch.setattr(xpnet.heads.Softmax, "series_differences", broken)
    net = xpnet.TwoLayerNet(5, 3, 2, seed=0)
    with pytest.raises(MemoryError, match="never fits"):
        net.numerical_gradient(np.ones((2, 5)), np.array([0, 1]), max_bytes=2**20)


# ---- any depth, every head -----------------------------------------------------
MULTI_CASES = [
    # sizes (depth = hidden layers), activation, output, decay, batch, sparsity
    ((6, 5, 3), "relu", "sigmoid", 0.1, 4, 0.5),
    ((5, 4, 4, 3), "relu", "softmax", 0.0, 6, 0.5),
    ((5, 4, 4, 3), "sigmoid", "identity", 0.05, 6, 0.3),
    ((4, 5, 3, 4, 2), "sigmoid", "sigmoid", 0.0, 5, 0.4),
    ((4, 5, 3, 4, 2), "relu", "identity", 0.0, 3, 0.0),
    ((3, 4, 3, 4, 3, 1), "relu", "sigmoid", 0.02, 4, 0.5),
    ((3, 4, 3, 4, 3, 2), "sigmoid", "softmax", 0.1, 1, 0.5),
]


def _multi_id(case):
    sizes, act, out, decay, n, _ = case
    return f"{'-'.join(map(str, sizes))}-{act}-{out}-l{decay}-n{n}"


@pytest.mark.parametrize("method", ["structured", "complex", "batched"])
@pytest.mark.parametrize("case", MULTI_CASES, ids=_multi_id)
def test_any_depth_methods_equal_loop(backend, method, case):
    sizes, activation, output, decay, n, sparsity = case
    net = make_multi(backend, sizes, activation=activation, output=output, decay=decay)
    x, _ = make_batch(n, sizes[0], sizes[-1], seed=n, sparsity=sparsity)
    t = make_targets(output, n, sizes[-1], seed=n)
    loop = host_loop_gradient(net, x, t)
    fast = net.numerical_gradient(x, t, method=method)
    assert list(fast) == list(loop) == list(net.params)
    for name in loop:
        assert_on_backend(fast[name], backend, shape=loop[name].shape)
        xp_assert_close(fast[name], loop[name], rtol=1e-7, backend=backend, err_msg=name)


@pytest.mark.parametrize("case", MULTI_CASES, ids=_multi_id)
def test_any_depth_complex_step_equals_exact_gradient(backend, case):
    sizes, activation, output, decay, n, sparsity = case
    net = make_multi(backend, sizes, activation=activation, output=output, decay=decay)
    x, _ = make_batch(n, sizes[0], sizes[-1], seed=n + 1, sparsity=sparsity)
    t = make_targets(output, n, sizes[-1], seed=n + 1)
    exact = ref_multi_gradient(host_params(net), x, t, activation, output, decay, log_eps=1e-7)
    got = net.numerical_gradient(x, t, method="complex")
    for name in exact:
        xp_assert_close(got[name], exact[name], rtol=1e-12, backend=backend, err_msg=name)


def test_any_depth_structured_equals_exact_gradient_within_central_difference_error(backend):
    """Against the exact gradient (not only the loop): O(h^2) ~ 1e-8 relative."""
    sizes, activation, output = (8, 6, 5, 4, 3), "relu", "softmax"
    net = make_multi(backend, sizes, activation=activation, output=output, decay=0.01)
    x, _ = make_batch(7, sizes[0], sizes[-1], seed=3)
    t = make_targets(output, 7, sizes[-1], seed=3)
    exact = ref_multi_gradient(host_params(net), x, t, activation, output, 0.01, log_eps=1e-7)
    got = net.numerical_gradient(x, t)
    for name in exact:
        xp_assert_close(got[name], exact[name], rtol=1e-6, backend=backend, err_msg=name)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_any_depth_chunking_does_not_change_result(backend, activation):
    net = make_multi(backend, (8, 4, 4, 3, 3), activation=activation, decay=0.1)
    x, t = make_batch(4, 8, 3, seed=5, sparsity=0.5)
    base = net.numerical_gradient(x, t)
    for max_bytes, bound in ((2**30, 1e-13), (4096, _BLOCKS), (1, _BLOCKS)):
        got = net.numerical_gradient(x, t, max_bytes=max_bytes)
        for name in base:
            assert rel_error(got[name], base[name]) <= bound, (max_bytes, name)


def test_relu_units_that_stay_off_are_skipped_not_lost(backend):
    """Layer-1 units whose ReLU stays off under the step leave the loss unchanged;
    skipping them must give exactly what evaluating them gives (the loop)."""
    net = make_multi(backend, (6, 8, 5, 3), activation="relu", std=1.0)
    x, t = make_batch(6, 6, 3, seed=2, sparsity=0.3)
    a1 = x @ host_params(net)["W1"] + host_params(net)["b1"]
    assert (a1 < 0).mean() > 0.2  # the case is exercised
    loop = host_loop_gradient(net, x, t)
    fast = net.numerical_gradient(x, t)
    for name in loop:
        xp_assert_close(fast[name], loop[name], rtol=1e-7, backend=backend, err_msg=name)


@pytest.mark.parametrize(
    "hidden, activation, expected",
    [([10], "sigmoid", 2), ([10, 8], "relu", 2), ([6, 5, 4], "sigmoid", 2)],
)
def test_device_to_host_transfers_of_one_gradient(transfers, hidden, activation, expected):
    """The structured gradient brings the inputs to the host once (the sample
    blocks and the first layer's pairs are planned from them) and, per sample
    block, what every other layer's plan needs in one transfer; nothing else
    leaves the device (documented)."""
    net = xpnet.MultiLayerNet(
        12, hidden, 3, activation, backend="array_api_strict", device="device1", seed=0
    )
    x, t = make_batch(9, 12, 3, seed=1)
    batch, layers = net.batch(x, t), net.checked_layers()
    transfers["n"] = 0
    structured_gradient(net.spec, layers, batch.x, batch.t)
    assert transfers["n"] == expected


def test_n_threads_really_runs_blocks_on_a_pool(monkeypatch):
    """On NumPy, n_threads > 1 splits the samples into blocks on a thread pool
    (with helper processes turned off; test_procs.py runs them)."""
    import xpnet.structured as structured

    monkeypatch.setenv(xpnet.procs.PARALLEL_VARIABLE, "threads")
    started, blocks = [], []
    real_pool, real_block = xpnet.work.ThreadPoolExecutor, block.block_rows

    class Counting(real_pool):
        def __init__(self, *args, **kwargs):
            started.append(kwargs.get("max_workers"))
            super().__init__(*args, **kwargs)

    def counted_block(ctx, layers, work_layers, x, *args):
        blocks.append(x.shape[0])
        return real_block(ctx, layers, work_layers, x, *args)

    monkeypatch.setattr(xpnet.work, "ThreadPoolExecutor", Counting)
    monkeypatch.setattr(xpnet.work, "_POOL", xpnet.work._Pool())  # none kept from before
    monkeypatch.setattr(structured, "block_rows", counted_block)
    net = xpnet.TwoLayerNet(30, 7, 4, 0.5, seed=0)
    x, t = make_batch(9, 30, 4, seed=5)
    single = net.numerical_gradient(x, t, n_threads=1)
    assert started == [] and blocks == [9]
    blocks.clear()
    # too little work to be worth a thread: one block, no pool
    net.numerical_gradient(x, t, n_threads=3)
    assert started == [] and blocks == [9]
    blocks.clear()
    monkeypatch.setattr(structured, "_THREAD_SHARE_BYTES", 0)
    threaded = net.numerical_gradient(x, t, n_threads=3)
    # the calling thread works beside two pool threads, on three blocks
    assert started == [2] and len(blocks) == 3 and sum(blocks) == 9
    for name in single:
        xp_assert_close(threaded[name], single[name], rtol=_BLOCKS)
    # the helper threads are kept for the next gradient
    net.numerical_gradient(x, t, n_threads=3)
    assert started == [2] and len(blocks) == 6
    xpnet.work._POOL.pool.shutdown(wait=True)


def test_a_block_of_rows_that_are_zero_for_every_sample_is_zero(backend):
    """A sharded gradient may ask for rows of W1 whose inputs are all 0 (and not
    the bias row): nothing to perturb, exact zeros, no error."""
    net = make_multi(backend, (6, 4, 3), activation="relu")
    x, t = make_batch(5, 6, 3, seed=1)
    x[:, 1:4] = 0.0
    batch, layers = net.batch(x, t), net.checked_layers()
    for mode, h in (("central", 1e-4), ("complex", 1e-20)):
        rows = structured_gradient(
            net.spec, layers, batch.x, batch.t, h=h, mode=mode, rows=[(1, 4), None]
        )
        assert rows[1] is None
        assert rows[0].shape == (3, 4) and np.all(to_numpy(rows[0]) == 0.0)


@pytest.mark.parametrize("mode", ["structured", "complex"])
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_series_and_direct_paths_agree(backend, monkeypatch, mode, activation):
    """Units above a perturbed one are taken as a series in its change where the
    left-out remainder is provably below rounding, and evaluated directly
    otherwise: forcing every unit onto the direct path (terms None) gives the
    same gradient to rounding, and the default really uses the series."""

    net = make_multi(backend, (8, 6, 5, 4, 3), activation=activation, decay=0.01)
    x, _ = make_batch(5, 8, 3, seed=8)
    t = make_targets("softmax", 5, 3, seed=8)
    used = []
    real = block.series_terms
    monkeypatch.setattr(block, "series_terms", lambda *a: used.append(real(*a)) or used[-1])
    by_series = net.numerical_gradient(x, t, method=mode)
    assert any(k is not None for k, _ in used), "the series was not used"
    monkeypatch.setattr(block, "series_terms", lambda *a: (None, None))
    by_direct = net.numerical_gradient(x, t, method=mode)
    bound = 1e-9 if mode == "structured" else 1e-13  # central: eps * L / h; complex: eps
    for name in by_direct:
        assert rel_error(by_series[name], by_direct[name]) <= bound, name


@pytest.mark.parametrize("dtype, tiny", [("float64", 1e-310), ("float32", 1e-37)])
def test_tiny_inputs_take_the_sigmoid_series_without_faults(backend, monkeypatch, dtype, tiny):
    """A central difference of a sigmoid net takes each pair's ``1 / q`` from the
    host: inputs so small that ``1 / q`` overflows the dtype (the move below the
    smallest normal number) give the gradient of the direct path, with no
    warning (they are errors here)."""

    net = make_net(backend, (6, 5, 3), dtype=dtype)
    x, t = make_batch(4, 6, 3, seed=3)
    x[:, :2] = tiny * np.array([1.0, -3.0])
    by_series = net.numerical_gradient(x.astype(dtype), t)
    monkeypatch.setattr(block, "series_terms", lambda *a: (None, None))
    by_direct = net.numerical_gradient(x.astype(dtype), t)
    # float64: central differences agree to ~eps L / h; float32 to its own rounding
    bound = 1e-9 if dtype == "float64" else 1e-3
    for name in by_direct:
        assert rel_error(by_series[name], by_direct[name]) <= bound, name


@pytest.mark.parametrize(
    "sizes, h, seed",
    [((8, 12, 8, 3), 1e-2, 0), ((8, 12, 10, 8, 3), 3e-3, 1)],  # one and two ReLU layers above
)
def test_a_layer_with_series_and_direct_units_equals_the_loop(backend, monkeypatch, sizes, h, seed):
    """A step large enough that some ReLU units may cross a kink above (direct
    items) while the others take the series, in one layer: each pair's series
    slots, direct slots and the 0 of its still units are put in place per unit,
    the smaller inputs of a unit that larger ones move to a kink take their
    series results, and the gradient is the loop's at the same step."""

    net = make_multi(backend, sizes, activation="relu", seed=seed)
    x, t = make_batch(12, 8, 3, seed=3, sparsity=0.3)
    plans = []
    real = block.hidden_rows
    monkeypatch.setattr(
        block, "hidden_rows", lambda ctx, plan, *a: plans.append(plan) or real(ctx, plan, *a)
    )
    fast = net.numerical_gradient(x, t, h=h)
    assert any(p.series_width and p.direct_width for p in plans)  # both paths in one layer
    assert max(p.direct_width for p in plans) >= 2  # several direct slots of a pair
    assert any(p.direct_count and p.safe is not None for p in plans)  # a unit on both paths
    loop = net.numerical_gradient(x, t, h=h, method="loop")
    for name in loop:  # central differences at h of 1e-2: rounding about eps * L / h
        assert rel_error(fast[name], loop[name]) <= 1e-10, name


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_relu_units_whose_own_kink_a_step_reaches_equal_the_loop(backend, monkeypatch, output):
    """One ReLU layer with the head right above (no kink above it) and a step so
    large that some inputs move a unit across its own kink, from either side.
    On NumPy those items are evaluated directly and the unit's smaller inputs
    take the series in the step itself (0 where the unit is off); elsewhere
    (a device's launches) every item's move is taken as it is, and no item is
    direct. Either way the gradient is the loop's at the same step."""

    net = make_multi(backend, (8, 12, 3), activation="relu", output=output, std=0.3)
    x, t = make_batch(10, 8, 3, seed=4, sparsity=0.3)
    if output != "softmax":
        t = np.eye(3)[t]
    h = 0.02  # the softmax's series still exact (8 terms)
    plans = []
    real = block.hidden_rows
    monkeypatch.setattr(
        block, "hidden_rows", lambda ctx, plan, *a: plans.append(plan) or real(ctx, plan, *a)
    )
    fast = net.numerical_gradient(x, t, h=h)
    (plan,) = plans
    pre = x @ to_numpy(net.params["W1"]) + to_numpy(net.params["b1"])
    on_items, off_items = 0, 0  # direct items that cross their unit's own kink
    for pair, unit in zip(plan.direct_pair, plan.direct_unit, strict=True):
        a = pre[plan.pairs.sample[pair], unit]
        crossing = h * abs(plan.pairs.value[pair]) >= abs(a)
        on_items += crossing and a > 0
        off_items += crossing and a < 0
    if backend.name == "numpy":
        assert on_items and off_items  # from both sides of the kink
        assert plan.safe is not None  # a unit on both paths
    else:
        assert plan.direct_count == 0
    loop = net.numerical_gradient(x, t, h=h, method="loop")
    for name in loop:  # central differences at h of 0.02: rounding about eps * L / h
        assert rel_error(fast[name], loop[name]) <= 1e-10, name


@pytest.mark.parametrize(
    "activation, hidden", [("sigmoid", [6]), ("relu", [6, 5]), ("sigmoid", [6, 5])]
)
def test_the_log_ratio_takes_its_series_on_the_host_where_the_move_is_linear(
    backend, monkeypatch, activation, hidden
):
    """On NumPy, a softmax head right above the layer or ReLU layers between (the
    scores move linearly) bound the losses' log ratio: the plan gives the terms
    of its series (``2 atanh``); a sigmoid layer between, or a device's
    backend, keeps the log. Either way the gradient is the loop's."""

    net = make_multi(backend, (8, *hidden, 3), activation=activation, seed=1)
    x, t = make_batch(6, 8, 3, seed=2)
    plans = []
    real = block.hidden_rows
    monkeypatch.setattr(
        block, "hidden_rows", lambda ctx, plan, *a: plans.append(plan) or real(ctx, plan, *a)
    )
    fast = net.numerical_gradient(x, t)
    linear = [p.layer == len(hidden) - 1 or activation == "relu" for p in plans]
    for plan, straight in zip(plans, linear, strict=True):
        assert (plan.log_terms is not None) == (straight and backend.name == "numpy"), plan.layer
    loop = net.numerical_gradient(x, t, method="loop")
    for name in loop:
        assert rel_error(fast[name], loop[name]) <= 1e-8, name


def test_the_series_is_not_used_where_moves_may_be_large(backend, monkeypatch):
    """A step and weights so large that no series of at most MAX_TERMS terms is
    provably exact: every unit is evaluated directly, and the gradient is the
    loop's."""

    net = make_multi(backend, (6, 5, 4, 3), activation="sigmoid", std=6.0)
    x, t = make_batch(4, 6, 3, seed=9)
    used = []
    real = block.series_terms
    monkeypatch.setattr(block, "series_terms", lambda *a: used.append(real(*a)) or used[-1])
    loop = net.numerical_gradient(x, t, method="loop", h=1e-1)
    fast = net.numerical_gradient(x, t, h=1e-1)
    assert (None, None) in used
    for name in loop:
        xp_assert_close(fast[name], loop[name], rtol=1e-7, backend=backend, err_msg=name)


# ---- array operations: a GPU's kernel launches, counted (not timed) -------------
@pytest.mark.parametrize(
    "hidden, activation, budget",
    [
        # the book's net: 93 today on this synthetic batch's paths (docs/benchmarks.md)
        ([50], "sigmoid", 100),
        ([100, 100], "relu", 600),
        ([100, 100], "sigmoid", 600),
    ],
)
def test_array_operations_per_gradient_do_not_grow_with_units(
    gpu_budget, hidden, activation, budget
):
    """With chunks sized as on a GPU the structured gradient issues a number of
    array operations that depends on the depth and on which exact paths the data
    take, not on the number of units or samples."""
    from conftest import count_array_ops

    net = xpnet.MultiLayerNet(
        784, hidden, 10, activation, backend="array_api_strict", device="device1", seed=0
    )
    x, t = make_batch(100, 784, 10, seed=0)
    x = np.round(x * 255) / 255  # 8-bit pixel values, as in the data sets
    xs, ts = net.backend.from_host(x), net.backend.from_host(t)
    net.numerical_gradient(xs, ts)  # warm-up
    ops = count_array_ops(lambda: net.numerical_gradient(xs, ts))
    assert ops <= budget
    wider = xpnet.MultiLayerNet(
        784, [2 * h for h in hidden], 10, activation, backend="array_api_strict",
        device="device1", seed=0,
    )  # fmt: skip
    # inputs on the wider net's own device object, like the first net's (an array
    # on an equal device of another object costs a device comparison more)
    half_x, half_t = wider.backend.from_host(x[:50]), wider.backend.from_host(t[:50])
    wider.numerical_gradient(half_x, half_t)
    # the same paths, whatever the widths and samples (ReLU nets may take a direct
    # path for some units with some data, and not with other data)
    wider_ops = count_array_ops(lambda: wider.numerical_gradient(half_x, half_t))
    assert wider_ops == ops if activation == "sigmoid" else wider_ops <= budget


def test_a_bug_planted_in_backprop_never_moves_the_numerical_gradient(backend, monkeypatch):
    """The numerical gradient is an independent check: nothing of it comes from
    backprop. Break backprop (and the activations' derivatives): every numerical
    method is bit for bit unchanged, and backprop is caught by the gradient check."""
    import xpnet.functions
    import xpnet.model

    net = make_multi(backend, (6, 5, 4, 3), activation="sigmoid", decay=0.01)
    x, _ = make_batch(5, 6, 3, seed=4)
    t = make_targets("softmax", 5, 3, seed=4)
    methods = ("structured", "complex", "batched", "loop")
    before = {m: net.numerical_gradient(x, t, method=m) for m in methods}
    real = xpnet.model.backprop

    def planted(spec, layers, batch):
        grads = real(spec, layers, batch)
        return [(dW * 1.01, db) for dW, db in grads]

    monkeypatch.setattr(xpnet.model, "backprop", planted)
    for name in xpnet.functions.ACTIVATIONS:
        activation = xpnet.functions.ACTIVATIONS[name]
        monkeypatch.setattr(activation, "derivative", lambda a, z: 0 * z)
    for method in methods:
        after = net.numerical_gradient(x, t, method=method)
        for name in after:
            assert np.array_equal(to_numpy(after[name]), to_numpy(before[method][name]))
    assert rel_error(net.gradient(x, t)["W1"], before["loop"]["W1"]) > 0.5


def test_the_complex_step_takes_the_mean_slope_at_a_relu_kink():
    """Zero inputs and zero biases put every hidden ReLU exactly at its kink:
    central differences see the mean of the two slopes (1/2), and so must the
    complex step (xpnet.functions.relu takes x / 2 where Re x == 0; it took 0,
    a relative difference of 1). At a kink the central difference moves the
    unit on one side only, so its truncation error is O(h), not O(h^2): with
    h = 1e-4, agreement to 1e-4 relative is what can be asked."""
    net = xpnet.MultiLayerNet(5, [4], 3, "relu", 0.5, seed=1)
    x = np.zeros((4, 5))
    x[:, 0] = [0.0, 1.0, 0.0, 2.0]
    t = np.array([0, 1, 2, 1])
    loop = net.numerical_gradient(x, t, method="loop")
    complex_step = net.numerical_gradient(x, t, method="complex")
    for name in loop:
        xp_assert_close(complex_step[name], loop[name], rtol=1e-4, err_msg=name)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux")
@pytest.mark.parametrize("setting", ["1", "0"])
def test_a_host_gradient_on_one_thread_tunes_the_allocator_unless_told_not_to(setting):
    """glibc's own settings return freed chunks to the kernel and fault them in
    again (the book's net 1.4-1.6x slower on one thread): the first structured
    gradient on the host tunes them, on one thread too, in a fresh process."""
    code = (
        "import numpy as np, xpnet, xpnet.device as d\n"
        "before = d._ALLOCATOR['tuned']\n"
        "x = np.random.default_rng(0).random((4, 6)); t = np.array([0, 1, 2, 0])\n"
        "net = xpnet.TwoLayerNet(6, 5, 3, seed=0)\n"
        "net.numerical_gradient(x, t, n_threads=1)\n"
        "print(before, d._ALLOCATOR['tuned'])\n"
    )
    env = {**os.environ, "XPNET_TUNE_MALLOC": setting, "XPNET_NUM_THREADS": "1"}
    for variable in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(variable, None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["None", "True" if setting == "1" else "False"]
