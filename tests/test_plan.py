"""Host-side plans: pure functions of NumPy arrays, tested without a backend."""

import numpy as np
import pytest

from xpnet import plan


def test_direct_items_are_each_pairs_samples_direct_units_in_order():
    """Against the definition: every (pair, unit) whose sample has the unit
    direct, by pair, then unit; samples with none, and a batch with none."""
    rng = np.random.default_rng(6)
    for _ in range(50):
        z = rng.integers(0, 4, (rng.integers(1, 7), rng.integers(1, 6))) / 3
        pairs = plan.distinct_pairs(z)
        direct = rng.random((z.shape[0], rng.integers(1, 8))) < rng.random()
        pair, unit = plan._direct_items(pairs, direct)
        expected = np.nonzero(direct[pairs.sample])
        assert np.array_equal(pair, expected[0]) and np.array_equal(unit, expected[1])
        assert pair.dtype == unit.dtype == np.int64


def _summed(sums, values):
    """The gradient rows as the computation sums them (:mod:`xpnet.hidden`)."""
    parts = []
    for lo, hi, width, offset in sums.chunks:
        index = sums.index[offset : offset + (hi - lo) * width]
        parts.append(values[index].reshape(width, hi - lo, -1).sum(axis=0))
    rows = np.concatenate(parts)
    return rows if sums.inverse is None else rows[sums.inverse]


@pytest.mark.parametrize("chunk_bytes", [8, 200, 1000, 10**6])
def test_input_sums_add_every_input_of_a_feature_within_the_budget(chunk_bytes):
    rng = np.random.default_rng(2)
    z = rng.integers(0, 4, (9, 13)) / 3
    z[:, 3] = 0  # a feature with no non-zero input
    z[:, 5] = 1 / 3  # one that is non-zero in every sample
    pairs = plan.distinct_pairs(z)
    values = rng.integers(-50, 50, (pairs.count, 4)).astype(float)  # sums exact in any order
    values[-1] = 0.0  # the pair of value 0's row: exactly 0
    sums = plan.input_sums(pairs, 4 * 8, chunk_bytes)
    expected = values[pairs.index].sum(axis=0)  # (F, J): every input of every sample
    assert np.array_equal(_summed(sums, values), expected)
    # the chunks cover the features once, each within the budget (or one feature)
    assert [lo for lo, _, _, _ in sums.chunks] == [0] + [hi for _, hi, _, _ in sums.chunks[:-1]]
    assert sums.chunks[-1][1] == z.shape[1]
    for lo, hi, width, _ in sums.chunks:
        assert (hi - lo) * width * 4 * 8 <= chunk_bytes or hi - lo == 1
    if sums.inverse is not None:  # inputs equal to 0 skipped: fewer rows summed
        summed = sum((hi - lo) * width for lo, hi, width, _ in sums.chunks)
        assert summed < z.size


def test_input_sums_keep_the_inputs_order_of_the_samples():
    """Each feature's non-zero inputs come in sample order: the rounding of the
    sum is the one of adding every input in order (and 0s change nothing)."""
    z = np.array([[0.5, 0.0, 0.25], [0.0, 0.75, 0.25], [0.5, 0.5, 0.0], [0.25, 0.0, 0.0]])
    pairs = plan.distinct_pairs(z)
    sums = plan.input_sums(pairs, 8, 8 * 3)  # chunks of at most 3 gathered rows
    assert sums.inverse is not None
    for lo, hi, width, offset in sums.chunks:
        for f in range(hi - lo):
            feature = int(np.nonzero(sums.inverse == lo + f)[0][0])
            got = sums.index[offset + f : offset + (hi - lo) * width : hi - lo]
            nonzero = [int(pairs.index[n, feature]) for n in range(4) if z[n, feature] != 0]
            assert list(got[: len(nonzero)]) == nonzero
            assert all(k == pairs.count - 1 for k in got[len(nonzero) :])


def test_every_unit_of_every_pair_has_one_place():
    z = np.array([[0.5, 1.0, 0.0], [0.25, 0.25, 0.75]])
    still = np.array([[False, True, False, False], [False, False, False, True]])
    unsafe = np.array([[False, False, True, False], [True, True, False, False]])
    kink = np.where(unsafe, 0.0, np.inf)  # every input of an unsafe unit reaches its kink
    p = plan.layer_plan(
        0, (0, 3), z, 4, still=still, kink=kink, terms=3,
        series_item_bytes=8, direct_item_bytes=8, chunk_bytes=1024,
    )  # fmt: skip
    # 2 pairs of sample 0 (1 direct unit), 2 of sample 1 and the pair of value 0
    # (2 direct units each)
    width, slots = p.series_width, p.direct_width
    assert (width, slots) == (2, 2) and p.direct_count == 2 * 1 + 3 * 2
    used = set()
    for u in range(p.pairs.count):
        n = p.pairs.sample[u]
        for j in range(4):
            column = p.layout[n, j]
            if still[n, j]:
                assert column == width + slots  # the 0
                continue
            assert (u, column) not in used
            used.add((u, column))
            if unsafe[n, j]:  # a direct item of this very pair and unit
                item = p.direct_slots[u * slots + column - width]
                assert (p.direct_pair[item], p.direct_unit[item]) == (u, j)
            else:  # a series slot of this pair's sample holding unit j
                assert column < width and p.series[n, column] == j
    # every direct item is some pair's slot once; the padding is the 0 after them
    items = p.direct_slots[p.direct_slots < p.direct_count]
    assert sorted(items) == list(range(p.direct_count))
    assert np.all(p.direct_slots[p.direct_slots >= p.direct_count] == p.direct_count)


def test_inputs_below_a_units_kink_take_its_series_result():
    """A unit that the sample's larger inputs may move to a kink above is
    evaluated directly for those pairs only; its smaller inputs' direct slots
    take the series result of the same pair and unit (both are the loss at the
    same step, the series exact where no kink is reached)."""
    z = np.array([[0.5, 1.0, 0.25], [0.75, 0.0, 0.5]])
    kink = np.array([[np.inf, 0.6, np.inf], [0.0, 0.6, np.inf]])
    p = plan.layer_plan(
        0, (0, 3), z, 3, kink=kink, terms=3,
        series_item_bytes=8, direct_item_bytes=8, chunk_bytes=1024,
    )  # fmt: skip
    width, slots = p.series_width, p.direct_width
    # unit 0 of sample 1 reaches at every input (kink 0): direct only, no series slot
    assert not (p.series[1] == 0).any() and (p.series[0] == 0).any()
    reached = {(int(u), int(j)) for u, j in zip(p.direct_pair, p.direct_unit, strict=True)}
    for u in range(p.pairs.count):
        n, value = p.pairs.sample[u], p.pairs.value[u]
        for j in range(3):
            column = p.layout[n, j]
            if column < width:  # a series slot holding unit j
                assert p.series[n, column] == j and abs(value) < kink[n, j]
                continue
            where = p.direct_slots[u * slots + column - width]
            if abs(value) >= kink[n, j]:  # a direct item of this very pair and unit
                assert (u, j) in reached
                assert (p.direct_pair[where], p.direct_unit[where]) == (u, j)
            else:  # the series result of this pair in unit j's slot
                assert (u, j) not in reached
                place = p.safe[where - p.direct_count]
                assert place // width == u and p.series[n, place % width] == j
    # pairs by value in a sample: 1.0 (pair 2) and 0.75 (pair 4) reach unit 1's
    # kink; every pair of sample 1 reaches unit 0's, its 0 pair (5) too
    assert reached == {(2, 1), (4, 1), (3, 0), (4, 0), (5, 0)}


def test_without_a_series_every_moving_unit_is_a_direct_item():
    z = np.array([[0.5, 0.0]])
    p = plan.layer_plan(
        0, (0, 2), z, 3, still=np.array([[False, True, False]]), terms=None,
        series_item_bytes=8, direct_item_bytes=8, chunk_bytes=1024,
    )  # fmt: skip
    assert p.series_width == 0 and p.direct_count == 2 + 2  # the pair 0.5 and the pair 0
    assert list(p.direct_unit) == [0, 2, 0, 2]


def test_all_units_on_the_series_path_need_no_position_table():
    p = plan.layer_plan(
        0, (0, 2), np.array([[0.5, 1.0]]), 3, terms=4,
        series_item_bytes=8, direct_item_bytes=8, chunk_bytes=1024,
    )  # fmt: skip
    assert p.series is None and p.layout is None and p.series_width == 3


def test_chunks_cover_a_range():
    assert plan.chunks(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert plan.chunks(0, 3) == []
    assert plan.chunks(2, 0) == [(0, 1), (1, 2)]


def test_input_columns_and_reach_include_the_bias_input():
    x = np.array([[0.5, -2.0, 0.0], [0.25, 0.0, 0.75]])
    assert np.array_equal(plan.input_columns(x, (1, 4)), [[-2.0, 0.0, 1.0], [0.0, 0.75, 1.0]])
    assert np.array_equal(plan.input_columns(x, (0, 2)), x[:, :2])
    # h * max |input| per sample, over the span's columns (the bias's input is 1)
    np.testing.assert_array_equal(plan.input_reach(x, (0, 3), 0.5), [1.0, 0.375])
    np.testing.assert_array_equal(plan.input_reach(x, (2, 4), 0.5), [0.5, 0.5])
    np.testing.assert_array_equal(plan.input_reach(x, (3, 4), 1e-4), [1e-4, 1e-4])


def test_sample_starts_bound_each_samples_pairs():
    z = np.array([[0.5, 0.5, 1.0], [0.0, 0.0, 0.0], [0.25, 0.0, 0.75], [0.0, 0.0, 0.0]])
    pairs = plan.distinct_pairs(z)
    starts = pairs.sample_starts
    assert list(starts) == [0, 2, 2, 4, 5]  # the pair of value 0 is the last sample's
    for n in range(4):
        assert np.all(pairs.sample[starts[n] : starts[n + 1]] == n)


def test_relu_kinks_take_the_nearer_of_the_own_and_the_kinks_above():
    """``kink`` is the least input magnitude whose step may reach the unit's own
    kink (``|a| / h``) or one above (``gap / h``), with the 1% margin; ``still``
    the units off by more than the sample's reach."""
    pre = np.array([[0.5, -0.5, 0.0], [-2.0, 1e-3, 3.0]])
    gap = np.array([[0.1, 10.0, 1.0], [1.0, 1.0, 1e-3]])
    reach = np.array([0.6, 1.0])
    h = 0.1
    still, kink = plan.relu_kinks(pre, None, reach, h)
    assert still.tolist() == [[False, False, False], [True, False, False]]
    np.testing.assert_allclose(kink, np.abs(pre) * plan.KINK_SHARE / h)
    assert kink[0, 2] == 0.0  # exactly at its kink: every input reaches it
    _, both = plan.relu_kinks(pre, gap, reach, h)
    np.testing.assert_allclose(both, np.minimum(np.abs(pre), gap) * plan.KINK_SHARE / h)
    assert both[0, 0] < kink[0, 0] and both[1, 2] < kink[1, 2]  # a kink above is nearer
    # without the units' own kinks (a device): the kinks above, or none
    _, above = plan.relu_kinks(pre, gap, reach, h, own=False)
    np.testing.assert_allclose(above, gap * plan.KINK_SHARE / h)
    assert plan.relu_kinks(pre, None, reach, h, own=False)[1] is None


def test_relu_kinks_out_of_reach_are_inf_without_a_warning():
    """A complex step's tiny ``h`` makes ``|a| / h`` overflow: no input reaches
    that kink (inf), and no overflow warning is raised (warnings are errors)."""
    pre = np.array([[1e300, -1e300]])
    _, kink = plan.relu_kinks(pre, None, np.array([1e-20]), 1e-20)
    assert np.isinf(kink).all()
