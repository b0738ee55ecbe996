"""Distinct (sample, value) pairs: pure functions of NumPy arrays, tested
without a backend, against the definition and each path against the other."""

import numpy as np
import pytest

from xpnet import pairs as pairing


def test_distinct_pairs_share_equal_values_of_a_sample_and_skip_zeros():
    z = np.array([[0.5, 0.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0], [0.25, 0.75, 0.25, 0.25]])
    pairs = pairing.distinct_pairs(z)
    assert pairs.count == 4 + 1  # (0, .5), (0, 1), (2, .25), (2, .75), and (2, 0)
    assert list(pairs.sample) == [0, 0, 2, 2, 2]
    assert pairs.value[-1] == 0.0
    for n in range(3):
        for i in range(4):
            k = pairs.index[n, i]
            if z[n, i] == 0:
                assert k == pairs.count - 1  # the pair of value 0, whose results are 0
            else:
                assert pairs.sample[k] == n and pairs.value[k] == z[n, i]
    assert np.all(np.diff(pairs.sample) >= 0)


def test_distinct_pairs_of_random_8_bit_rows():
    rng = np.random.default_rng(0)
    z = rng.integers(0, 6, (20, 30)) / 5
    pairs = pairing.distinct_pairs(z)
    assert pairs.count == sum(len(set(row[row != 0])) for row in z) + 1
    rebuilt = pairs.value[pairs.index]
    assert np.array_equal(rebuilt, z)


def test_distinct_pairs_of_signed_rows_with_negative_zeros():
    """Against the definition, pair by pair: negative values sort before the 0s
    (which lie mid-row), and -0.0 is an input equal to 0."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        z = rng.integers(-3, 4, (rng.integers(1, 6), rng.integers(1, 7))) / 2
        z[(z == 0) & (rng.random(z.shape) < 0.5)] = -0.0
        pairs = pairing.distinct_pairs(z)
        expected = [(n, v) for n, row in enumerate(z) for v in sorted(set(row[row != 0]))]
        assert pairs.count == len(expected) + 1
        assert list(zip(pairs.sample[:-1], pairs.value[:-1], strict=True)) == expected
        assert pairs.value[-1] == 0.0 and pairs.sample[-1] == z.shape[0] - 1
        zeros = z == 0
        assert np.all(pairs.index[zeros] == pairs.count - 1)
        assert np.array_equal(pairs.sample[pairs.index[~zeros]], np.nonzero(~zeros)[0])
        assert np.array_equal(pairs.value[pairs.index], np.where(zeros, 0.0, z))


def test_sort_keys_order_like_the_values_with_each_zero_its_own_key_above_all():
    """The keys of distinct_pairs's argsort: against comparisons of the values
    themselves, over signs, magnitudes from subnormal to inf, float32 and
    float64, and the zeros (both signs) above every other value, by column."""
    rng = np.random.default_rng(2)
    for dtype in (np.float64, np.float32):
        info = np.finfo(dtype)
        special = [0.0, -0.0, info.smallest_subnormal, -info.smallest_subnormal, info.max]
        special += [-info.max, np.inf, -np.inf, 1.0, -1.0]
        scaled = rng.standard_normal(60) * 10.0 ** rng.integers(-30, 30, 60)
        z = np.concatenate([np.array(special, dtype=dtype), scaled.astype(dtype)])[None, :]
        keys = pairing._sort_keys(z)[0]
        zero = z[0] == 0
        nonzero = np.flatnonzero(~zero)
        a, b = np.meshgrid(nonzero, nonzero, indexing="ij")
        assert np.array_equal(keys[a] < keys[b], z[0][a] < z[0][b])
        assert np.array_equal(keys[a] == keys[b], z[0][a] == z[0][b])
        assert keys[zero].min() > keys[nonzero].max()
        assert np.array_equal(np.diff(keys[zero]) > 0, np.diff(np.flatnonzero(zero)) > 0)


def _expected_pairs(z):
    return [(n, v) for n, row in enumerate(z) for v in sorted(set(row[row != 0]))]


def test_distinct_pairs_by_either_key_are_the_definitions():
    """Rows of exact float32 values (sorted by float32 keys) and rows with values
    that float32 would merge or cannot hold (int64 keys): the pairs are the
    definition's either way, and each path is taken where it should be."""
    rng = np.random.default_rng(4)
    levels = (rng.integers(-255, 256, (6, 40)) * (rng.random((6, 40)) < 0.5)).astype(np.float32)
    exact = (levels / np.float32(255)).astype(np.float64)  # float32 pixels in a float64 net
    merged = exact.copy()
    merged[0, :3] = [1.0, 1.0 + 1e-12, 1.0 - 1e-12]  # distinct in float64, equal in float32
    huge, tiny = exact.copy(), exact.copy()
    huge[1, 0], tiny[2, 0] = 1e300, 1e-300  # inf and 0 in float32
    with_inf = exact.copy()
    with_inf[3, 5] = np.inf  # a float32 value, but it would tie with the zeros' key
    assert pairing._float32_keys(exact) is not None
    not_finite = exact.astype(np.float32)
    not_finite[4, 1] = np.nan  # float32 already: no rounding to find, but not finite
    for z in (merged, huge, tiny, with_inf, not_finite):
        assert pairing._float32_keys(z) is None
    for z in (exact, merged, huge, tiny, with_inf, exact.astype(np.float32)):
        pairs = pairing.distinct_pairs(z)
        assert list(zip(pairs.sample[:-1], pairs.value[:-1], strict=True)) == _expected_pairs(z)
        assert np.array_equal(pairs.value[pairs.index], np.where(z == 0, 0.0, z))


def test_distinct_pairs_of_float32_rows_with_many_zeros():
    rng = np.random.default_rng(3)
    z = (rng.integers(0, 4, (7, 50)) * (rng.random((7, 50)) < 0.3)).astype(np.float32) / 3
    pairs = pairing.distinct_pairs(z)
    expected = [(n, v) for n, row in enumerate(z) for v in sorted(set(row[row != 0]))]
    assert list(zip(pairs.sample[:-1], pairs.value[:-1], strict=True)) == expected
    assert np.array_equal(pairs.value[pairs.index], z)


def _same(got, expected):
    for name in ("sample", "value", "index"):
        a, b = getattr(got, name), getattr(expected, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name


def _8_bit(rng, n_samples, n_features, dtype):
    """8-bit images scaled to [0, 1] as the loaders do (float32, then the net's
    dtype), half their pixels 0, with a bias column of 1s."""
    levels = rng.integers(0, 256, (n_samples, n_features)) * (
        rng.random((n_samples, n_features)) < 0.5
    )
    z = (levels.astype(np.float32) / np.float32(255)).astype(dtype)
    return np.concatenate([z, np.ones((n_samples, 1), dtype=dtype)], axis=1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_grid_pairs_of_8_bit_images_are_the_sorted_ones(dtype):
    rng = np.random.default_rng(5)
    for n_samples, n_features in ((1, 300), (9, 784), (40, 400)):
        z = _8_bit(rng, n_samples, n_features, dtype)
        z[0] = 0.0  # a sample with no non-zero input but the bias
        z[-1, :5] = -0.0
        grid = pairing._grid_pairs(z)
        assert grid is not None
        _same(grid, pairing._sorted_pairs(z))
        _same(pairing.distinct_pairs(z), grid)
        assert list(zip(grid.sample[:-1], grid.value[:-1], strict=True)) == _expected_pairs(z)
    divided = rng.integers(0, 256, (5, 300)) / 255.0  # float64 k / 255: a grid too
    _same(pairing._grid_pairs(divided), pairing._sorted_pairs(divided))


def test_grid_pairs_refuse_values_that_share_a_code_or_lie_off_the_grid():
    rng = np.random.default_rng(6)
    base = _8_bit(rng, 6, 300, np.float64)
    near = base.copy()
    near[2, 7] = 0.5
    near[3, 7] = 0.5 + 1e-9  # the code of 0.5: two values for one code
    tiny = base.copy()
    tiny[1, 3] = 1e-5  # code 0, beside the inputs equal to 0
    for z in (near, tiny, base - 0.5, base * 1.01, np.where(base > 0.9, np.nan, base)):
        assert pairing._grid_pairs(z) is None
    for z in (near, tiny):  # distinct_pairs takes the sort instead: the definition
        found = pairing.distinct_pairs(z)
        assert list(zip(found.sample[:-1], found.value[:-1], strict=True)) == _expected_pairs(z)
        assert np.array_equal(found.value[found.index], z)
    sigmoid = 1.0 / (1.0 + np.exp(-rng.standard_normal((4, 300))))
    assert pairing._grid_pairs(sigmoid) is None


def test_grid_pairs_take_a_value_that_alone_has_code_0_as_any_other():
    rng = np.random.default_rng(7)
    z = _8_bit(rng, 5, 300, np.float64)
    z[z == 0] = 1e-3  # no input is 0: code 0 is a value of its own
    grid = pairing._grid_pairs(z)
    assert grid is not None and not np.any(grid.index == grid.count - 1)
    _same(grid, pairing._sorted_pairs(z))


def test_distinct_pairs_sort_only_where_the_grid_does_not_hold(monkeypatch):
    rng = np.random.default_rng(8)
    wide, narrow = _8_bit(rng, 4, 300, np.float64), _8_bit(rng, 4, 100, np.float64)
    expected = pairing._sorted_pairs(wide)

    def no_sort(z):
        raise AssertionError("sorted")

    monkeypatch.setattr(pairing, "_sorted_pairs", no_sort)
    _same(pairing.distinct_pairs(wide), expected)
    with pytest.raises(AssertionError, match="sorted"):  # 101 features: the table is larger
        pairing.distinct_pairs(narrow)
