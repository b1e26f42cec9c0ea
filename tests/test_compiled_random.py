"""The compiled random draws (``recourse_sim.compiled_random``): equal to an independent plain-Python replay, and
uniform where it matters (every ordered head of a permutation equally likely, consecutive permutations
independent, bounded integers unbiased where a plain modulo is not)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from replay import _below, permutation_splits
from scipy import stats

from recourse_sim.compiled_random import PermutationStream, below


def _heads(n_permutations: int, n: int, k: int, seed: int) -> np.ndarray:
    return PermutationStream(n, k, torch.Generator().manual_seed(seed)).take(n_permutations)


@pytest.mark.parametrize("n, k", [(26, 15), (7, 7), (1600, 800), (3, 1)])
def test_heads_equal_the_plain_python_replay(n, k):
    expected = [x_side for x_side, _ in permutation_splits(torch.Generator().manual_seed(n), 12, n, k)]
    assert _heads(12, n, k, seed=n).tolist() == expected


def test_indicator_rows_mark_the_same_draws_as_the_heads():
    heads = _heads(9, 30, 11, seed=5)
    marks = np.zeros((9, 30), np.float32)
    stream = PermutationStream(30, 11, torch.Generator().manual_seed(5))
    stream.mark(marks[:4])
    stream.mark(marks[4:])  # in chunks, continuing the stream
    expected = np.zeros((9, 30), np.float32)
    np.put_along_axis(expected, heads, 1.0, axis=1)
    assert (marks == expected).all()


def test_chunks_continue_one_stream():
    stream = PermutationStream(50, 20, torch.Generator().manual_seed(3))
    chunks = np.concatenate([stream.take(size) for size in (4, 1, 7)])
    assert (chunks == _heads(12, 50, 20, seed=3)).all()


@pytest.mark.parametrize("n, k", [(5, 2), (4, 4)])
def test_every_ordered_head_is_equally_likely(n, k):
    heads = _heads(120_000, n, k, seed=12345)
    outcomes = list(itertools.permutations(range(n), k))
    index = {outcome: i for i, outcome in enumerate(outcomes)}
    counts = np.bincount([index[tuple(row)] for row in heads.tolist()], minlength=len(outcomes))
    assert stats.chisquare(counts).pvalue > 1e-3
    assert counts.min() > 0


def test_consecutive_permutations_are_independent():
    """Each row continues from the previous row's arrangement; the pair (row p, row p + 1) is still uniform."""
    heads = _heads(100_001, 5, 1, seed=99)[:, 0]
    pairs = np.bincount(heads[:-1] * 5 + heads[1:], minlength=25)
    assert stats.chisquare(pairs).pvalue > 1e-3


def test_bounded_integers_are_unbiased_where_a_modulo_is_not():
    """bound = 3 * 2^30: a plain ``x mod bound`` of 32 random bits lands below 2^30 half of the time, not a third."""
    bound, state, low = 3 * 2**30, np.uint64(7), 0
    draws = 60_000
    for _ in range(draws):
        state, value = below(state, bound)
        state = np.uint64(state)  # numba hands the state back as a Python int
        assert 0 <= value < bound
        low += value < 2**30
    assert abs(low / draws - 1 / 3) < 0.01


def test_the_compiled_and_replayed_bounded_integers_agree():
    state_c, state_p = np.uint64(2024), 2024
    for bound in [1, 2, 3, 10, 1000, 2**31 + 1, 2**32 - 1]:
        for _ in range(20):
            state_c, a = below(state_c, bound)
            state_p, b = _below(state_p, bound)
            assert (int(state_c), int(a)) == (state_p, b)
            state_c = np.uint64(state_c)
