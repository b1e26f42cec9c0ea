"""Random draws inside numba-compiled loops: splitmix64 streams, unbiased bounded integers and the X sides of
many random permutations at once (:class:`PermutationStream`, for the MMD permutation test).

Why: a draw from torch's generator costs a call (~12 us for ``torch.randperm(1600)``), and the loops that need
many small draws would spend their time calling. Each compiled loop takes one 62-bit seed drawn from the
caller's torch generator, so the caller's generator still decides everything and a seed still gives the same
results; the draws themselves come from splitmix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014): a Weyl-sequence counter passed through two xor-shift-multiply rounds, a few integer
operations per 64 bits.

Imported lazily by its users (numba costs ~0.3 s to import); compiled with ``cache=True``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_LOW_32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, inline="always")
def splitmix64(state: np.uint64) -> tuple[np.uint64, np.uint64]:
    """Advance a splitmix64 state; returns (new state, 64 random bits). The state is read as unsigned (a signed
    integer would shift its sign bit in)."""
    state = np.uint64(state) + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state, z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def below(state: np.uint64, bound: int) -> tuple[np.uint64, int]:
    """A uniform integer in ``[0, bound)`` for ``1 <= bound < 2^32``; returns (new state, integer).

    Lemire's multiply-shift ("Fast random integer generation in an interval", ACM TOMACS 2019): the top 32 bits
    ``x`` of a draw give ``m = x * bound``; ``m >> 32`` is the integer, and draws whose low half falls below
    ``2^32 mod bound`` are redrawn, which makes every integer exactly equally likely."""
    s = np.uint64(bound)
    threshold = (np.uint64(1 << 32) - s) % s
    while True:
        state, bits = splitmix64(state)
        m = (bits >> np.uint64(32)) * s
        if (m & _LOW_32) >= threshold:
            return state, np.int64(m >> np.uint64(32))


@njit(cache=True, inline="always")
def _shuffle_head(order: np.ndarray, k: int, state: np.uint64) -> np.uint64:
    """A partial Fisher-Yates shuffle of ``order`` in place: position ``i`` swaps with a uniform position in
    ``[i, n)``, for ``i < k``; ``order[:k]`` is then the head of a uniform random permutation. Returns the state."""
    n = order.shape[0]
    for i in range(k):
        state, j = below(state, n - i)
        j += i
        chosen = order[j]
        order[j] = order[i]
        order[i] = chosen
    return state


@njit(cache=True)
def permutation_heads(n_permutations: int, k: int, order: np.ndarray, state: np.uint64) -> tuple[np.ndarray, np.uint64]:
    """``(n_permutations, k)`` int64: the first ``k`` entries of ``n_permutations`` independent uniform random
    permutations of the ``n = len(order) < 2^32`` entries of ``order``; returns them and the new state.

    Each row is a partial Fisher-Yates shuffle of ``order`` in place (:func:`_shuffle_head`). Every row continues
    from the arrangement the previous row left: a Fisher-Yates shuffle of any arrangement is uniform, and that
    arrangement depends only on earlier draws, so the rows stay independent while each costs ``O(k)`` instead of
    ``O(n)``. Passing the returned state and the same ``order`` back continues the stream: drawing in chunks
    gives the rows of one call."""
    heads = np.empty((n_permutations, k), np.int64)
    state = np.uint64(state)
    for p in range(n_permutations):
        state = _shuffle_head(order, k, state)
        heads[p] = order[:k]
    return heads, state


@njit(cache=True)
def mark_permutation_heads(marks: np.ndarray, k: int, order: np.ndarray, state: np.uint64) -> np.uint64:
    """The draws of :func:`permutation_heads` for ``len(marks)`` permutations, written as 0/1 indicators: row
    ``p`` of the zero-filled ``marks`` (``(Q, n)``, any float dtype) gets a 1 at each of its head's entries.
    Returns the new state."""
    state = np.uint64(state)
    for p in range(marks.shape[0]):
        state = _shuffle_head(order, k, state)
        for i in range(k):
            marks[p, order[i]] = 1
    return state


class PermutationStream:
    """The X sides of one permutation test's re-splits, ``n_x`` of ``n`` pooled rows each, drawn in chunks of any
    size from one stream seeded by one draw from ``rng`` (``torch.randint(0, 2**62, (1,))``) when it is made:
    as row indices (:meth:`take`) or as 0/1 indicator rows (:meth:`mark`), the same draws either way."""

    def __init__(self, n: int, n_x: int, rng) -> None:
        import torch

        self.n_x = n_x
        self.order = np.arange(n, dtype=np.int64)
        self.state = np.uint64(int(torch.randint(0, 2**62, (1,), generator=rng)))

    def take(self, n_permutations: int) -> np.ndarray:
        """The next ``(n_permutations, n_x)`` X sides."""
        heads, state = permutation_heads(n_permutations, self.n_x, self.order, self.state)
        self.state = np.uint64(state)
        return heads

    def mark(self, marks: np.ndarray) -> None:
        """The next ``len(marks)`` X sides as 1s in the zero-filled ``(Q, n)`` array ``marks`` (in place)."""
        self.state = np.uint64(mark_permutation_heads(marks, self.n_x, self.order, self.state))
