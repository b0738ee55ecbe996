"""Host-side plans: pure functions of NumPy arrays, tested without a backend."""

import numpy as np
import pytest

from xpnet import plan


def test_distinct_pairs_share_equal_values_of_a_sample_and_skip_zeros():
    z = np.array([[0.5, 0.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0], [0.25, 0.75, 0.25, 0.25]])
    pairs = plan.distinct_pairs(z)
    assert pairs.count == 4  # (0, .5), (0, 1), (2, .25), (2, .75)
    assert list(pairs.sample) == [0, 0, 2, 2]
    for n in range(3):
        for i in range(4):
            k = pairs.index[n, i]
            if z[n, i] == 0:
                assert k == pairs.count  # the zero row
            else:
                assert pairs.sample[k] == n and pairs.value[k] == z[n, i]
    assert np.all(np.diff(pairs.sample) >= 0)


def test_distinct_pairs_of_random_8_bit_rows():
    rng = np.random.default_rng(0)
    z = rng.integers(0, 6, (20, 30)) / 5
    pairs = plan.distinct_pairs(z)
    assert pairs.count == sum(len(set(row[row != 0])) for row in z)
    rebuilt = np.append(pairs.value, 0.0)[pairs.index]
    assert np.array_equal(rebuilt, z)


def test_unit_layout_puts_every_unit_in_one_place():
    moving = np.array([[True, True, False, True], [True, False, False, False]])
    direct = np.array([[False, True, False, False], [False, False, False, True]])
    layout = plan.unit_layout(4, moving, direct)
    assert layout.series_width == 2 and layout.direct_width == 1
    for n in range(2):
        for j in range(4):
            where = layout.index[n, j]
            if not moving[n, j]:
                assert where == layout.series_width + layout.direct_width  # the zero
            elif direct[n, j]:
                assert layout.direct[n, where - layout.series_width] == j
            else:
                assert layout.series[n, where] == j


def test_unit_layout_of_all_units_on_the_series_path_is_none():
    layout = plan.unit_layout(5)
    assert layout.series is None and layout.index is None and layout.series_width == 5


def test_unpermute_index_points_into_the_flat_rows():
    layout = plan.unit_layout(3, np.array([[True, False, True]]), None)
    width = layout.series_width + 1
    flat = plan.unpermute_index(np.array([0, 0]), layout.index, width)
    assert flat.shape == (2, 3)
    assert flat[1, 1] == width + width - 1  # the second pair's zero slot


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_sample_blocks_cover_every_sample_once_within_the_budget(n_threads):
    rng = np.random.default_rng(1)
    per_sample = rng.integers(1, 100, 57).astype(float)
    blocks = plan.sample_blocks(per_sample, 400, n_threads)
    assert blocks[0][0] == 0 and blocks[-1][1] == 57
    assert all(a < b for a, b in blocks)
    assert all(b0 == a1 for (_, b0), (a1, _) in zip(blocks[:-1], blocks[1:], strict=True))
    assert all(per_sample[a:b].sum() <= 400 or b - a == 1 for a, b in blocks)
    if n_threads > 1:
        assert len(blocks) % n_threads == 0 or len(blocks) == 57


def test_sample_blocks_use_no_more_threads_than_the_work_is_worth():
    per_sample = np.full(10, 1.0)
    assert plan.sample_blocks(per_sample, 10**9, 4, min_share=5) == [(0, 5), (5, 10)]
    assert plan.sample_blocks(per_sample, 10**9, 4, min_share=100) == [(0, 10)]


def test_chunks_cover_a_range():
    assert plan.chunks(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert plan.chunks(0, 3) == []
    assert plan.chunks(2, 0) == [(0, 1), (1, 2)]
