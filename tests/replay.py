"""Plain-Python replays of the package's documented random draws, written independently of its numba code, so
tests can recompute a result from the same generator state (``from replay import ...``)."""

from __future__ import annotations

import torch

_MASK = 2**64 - 1


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & _MASK
    z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return state, z ^ (z >> 31)


def _below(state: int, bound: int) -> tuple[int, int]:
    """Lemire's unbiased multiply-shift on the top 32 bits of each draw."""
    threshold = (2**32 - bound) % bound
    while True:
        state, bits = _splitmix64(state)
        m = (bits >> 32) * bound
        if m & 0xFFFFFFFF >= threshold:
            return state, m >> 32


def permutation_splits(generator: torch.Generator, n_permutations: int, n: int, n_x: int) -> list[tuple[list, list]]:
    """The (X side, Y side) row lists of the MMD test's permutations: one seed drawn from ``generator``
    (``torch.randint(0, 2**62, (1,))``), then per permutation a partial Fisher-Yates shuffle of the first ``n_x``
    positions of an arrangement carried over from the previous permutation."""
    state = int(torch.randint(0, 2**62, (1,), generator=generator))
    order = list(range(n))
    splits = []
    for _ in range(n_permutations):
        for i in range(n_x):
            state, j = _below(state, n - i)
            order[i], order[i + j] = order[i + j], order[i]
        head = set(order[:n_x])
        splits.append((order[:n_x], [row for row in range(n) if row not in head]))
    return splits
