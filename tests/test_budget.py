"""Sample blocks and the per-sample bytes that size them: pure functions of
NumPy arrays, tested without a backend."""

import numpy as np
import pytest

from xpnet import budget


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_sample_blocks_cover_every_sample_once_within_the_budget(n_threads):
    rng = np.random.default_rng(1)
    per_sample = rng.integers(1, 100, 57).astype(float)
    blocks = budget.sample_blocks(per_sample, 400, n_threads)
    assert blocks[0][0] == 0 and blocks[-1][1] == 57
    assert all(a < b for a, b in blocks)
    assert all(b0 == a1 for (_, b0), (a1, _) in zip(blocks[:-1], blocks[1:], strict=True))
    assert all(per_sample[a:b].sum() <= 400 or b - a == 1 for a, b in blocks)
    if n_threads > 1:
        assert len(blocks) % n_threads == 0 or len(blocks) == 57


def test_sample_blocks_use_no_more_threads_than_the_work_is_worth():
    per_sample = np.full(10, 1.0)
    assert budget.sample_blocks(per_sample, 10**9, 4, min_share=5) == [(0, 5), (5, 10)]
    assert budget.sample_blocks(per_sample, 10**9, 4, min_share=100) == [(0, 10)]


@pytest.mark.parametrize(("n_threads", "per_run"), [(2, 1), (3, 1), (2, 3)])
def test_the_callers_run_leads_the_others_by_the_hand_off(n_threads, per_run):
    """The first run (the caller's) holds ``lead`` bytes more than each other,
    to within a sample; the others, and the blocks within a run, equal; the
    lead at most a quarter of an equal share and within the budget."""
    per_sample = np.full(600, 1.0)
    total, count = 600.0, n_threads * per_run
    budget_ = int(np.ceil(total / count)) + 40  # room for the lead in every block
    plain = budget.sample_blocks(per_sample, budget_, n_threads)
    assert len(plain) == count and {b - a for a, b in plain} == {600 // count}
    led = budget.sample_blocks(per_sample, budget_, n_threads, lead=30)
    assert len(led) == count and led[0][0] == 0 and led[-1][1] == 600
    runs = [sum(b - a for a, b in led[k : k + per_run]) for k in range(0, count, per_run)]
    assert all(abs(runs[0] - other - 30) <= 1 for other in runs[1:])
    assert max(runs[1:]) - min(runs[1:]) <= 1
    assert max(b - a for a, b in led[:per_run]) - min(b - a for a, b in led[:per_run]) <= 1
    # a quarter of an equal share at most, and never past the budget
    huge = budget.sample_blocks(per_sample, 10**9, n_threads, lead=10**6)
    first = huge[0][1]
    assert abs(first - (total + (n_threads - 1) * total / n_threads / 4) / n_threads) <= 1
    tight = budget.sample_blocks(per_sample, budget_ - 35, n_threads, lead=30)
    assert all(b - a <= budget_ - 35 for a, b in tight) and len(tight) == count
    assert tight[0][1] - tight[0][0] > tight[-1][1] - tight[-1][0]


def test_per_sample_bytes_grow_with_each_samples_distinct_inputs():
    """The first layer's share counts the pairs that distinct_pairs finds for
    the sample (its distinct non-zero values, and the bias input)."""
    x = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.0, 0.0]])
    sizes, spans = (4, 3, 2), [(0, 5), (0, 4)]
    per_sample = budget.per_sample_bytes(x, spans, sizes, 8, 8)
    pairs = np.array([1, 4, 0]) + 1  # distinct non-zero values, and the bias input
    # the same sizes; two samples that differ by one pair differ by one pair's bytes
    assert per_sample[1] > per_sample[0] > per_sample[2]
    slope = (per_sample[1] - per_sample[0]) / (pairs[1] - pairs[0])
    assert per_sample[0] - per_sample[2] == slope * (pairs[0] - pairs[2])
    # a skipped first layer leaves only what does not depend on the inputs
    flat = budget.per_sample_bytes(x, [None, (0, 4)], sizes, 8, 8)
    assert flat[0] == flat[1] == flat[2]


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_thread_shares_give_each_thread_one_run_of_consecutive_blocks(n_threads):
    blocks = budget.sample_blocks(np.full(12, 1.0), 2, n_threads)
    shares = budget.thread_shares(blocks, n_threads)
    assert len(shares) == min(n_threads, len(blocks))
    assert shares[0][0] == 0 and shares[-1][1] == 12
    for (start, stop, bounds), (next_start, _, _) in zip(
        shares, [*shares[1:], (12, 0, 0)], strict=True
    ):
        assert stop == next_start
        # the run's blocks, counted from its start, in order and without a gap
        assert [(a + start, b + start) for a, b in bounds] == [
            block for block in blocks if start <= block[0] < stop
        ]
    assert budget.thread_shares([(0, 5)], 4) == [(0, 5, [(0, 5)])]


def test_thread_shares_keep_a_runs_inputs_within_the_budget():
    """A helper receives a copy of its run's inputs: with 100 bytes per sample
    and 450 bytes allowed, a run holds two blocks of two samples, not three."""
    blocks = [(k, k + 2) for k in range(0, 12, 2)]  # six blocks of two samples
    assert [len(b) for _, _, b in budget.thread_shares(blocks, 2)] == [3, 3]
    capped = budget.thread_shares(blocks, 2, row_bytes=100, max_bytes=450)
    assert [(start, stop) for start, stop, _ in capped] == [(0, 4), (4, 8), (8, 12)]
    assert all(bounds == [(0, 2), (2, 4)] for _, _, bounds in capped)
    # a block larger than the budget still goes out whole, one per run
    assert len(budget.thread_shares(blocks, 2, row_bytes=100, max_bytes=50)) == 6


def test_gradient_blocks_count_pairs_exactly_only_for_more_blocks_than_threads():
    """Four rows of one repeated value and four of distinct values: the bound
    (every non-zero input a pair) makes all eight alike. The exact count (a
    sort) is taken only where the bound would give more blocks than threads."""
    x = np.vstack([np.full((4, 15), 0.5), np.tile(np.linspace(0.1, 1.0, 15), (4, 1))])
    sizes, spans = (15, 4, 2), [(0, 16), (0, 5)]
    bound = budget.per_sample_bytes(x, spans, sizes, 8, 8, exact=False)
    exact = budget.per_sample_bytes(x, spans, sizes, 8, 8)
    assert np.all(bound == bound[0]) and exact[0] < exact[-1] == bound[-1]
    roomy = int(16 * bound[0])  # the bound gives the threads' two blocks: kept
    assert budget.gradient_blocks(x, spans, sizes, 8, 8, roomy, 2) == [(0, 4), (4, 8)]
    tight = int(exact.sum() / 2 + exact[-1])  # the bound gives more than two
    assert len(budget.sample_blocks(bound, tight, 2)) > 2
    blocks = budget.gradient_blocks(x, spans, sizes, 8, 8, tight, 2)
    assert blocks == budget.sample_blocks(exact, tight, 2) and len(blocks) == 2
    assert blocks != [(0, 4), (4, 8)]  # cut where the exact bytes halve
