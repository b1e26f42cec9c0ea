"""The ``"greedy"`` strategy: Schut et al. (2021) / JSMA-style single-feature moves.

Each step moves every copy's single feature with the largest |d yloss / dx| by ``-epsilon * sign(g)``
(``epsilon`` = the generator's ``step_size``, 0.1), in the standardised search space. Candidate features are
the ones whose move the constraints allow (not immutable; the move survives the engine's projection, so no
feature is pushed past a bound, below its factual value if increase-only, above it if decrease-only, and a
one-hot column only moves if the move flips its category) and that have been changed fewer than ``n`` times
(10) by this copy; ties are broken at random. After every move the state is projected like any other search.

Counters and the cap ``n`` are per copy (CounterfactualExplanations.jl v0.1.5 ``GreedyGenerator``): once every
mutable feature of a copy is used up, that copy's ``passes += 1`` and ``n += n / passes`` (10 -> 20 -> 30 ...),
which frees every feature again while the counters keep counting. Two deliberate differences from the Julia
code: "used up" is tested over the *mutable* features (the Julia test includes immutable ones, which never
change, so it never fires when one exists), and ``n``/``passes`` live per copy instead of on the generator
object, whose mutation there leaks from one explanation into the next.

Everything is batched over systems, individuals and copies: no Python loop over rows. Stopping is the engine's:
with the default ``"threshold"`` rule an individual stops once all K copies reach gamma = 0.5.

Backends (``search(..., backend=...)``, as for gradient descent): on the CPU the search runs in the compiled
kernel (:mod:`~recourse_sim.generators.search_kernel`) wherever the kernel covers the model and the terms, with
the same moves, caps and passes. Only the tie-breaks differ: the torch loop uses ``torch.rand`` drawn for every
feature of every copy at every step; the kernel, only where features tie, uniform numbers from a splitmix64
stream per individual (seeded by a hash of the generator's state). Afterwards it draws the torch loop's numbers
anyway, so the generator ends in the same state and later draws do not change. With continuous gradients, ties
are rare (features with equal weights and scales tie), so both backends make the same moves almost always.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from recourse_sim.generators.engine import (
    FeatureSpace,
    descend_or_compile,
    iterations_of_descend,
    per_system,
    register_strategy,
)
from recourse_sim.generators.problem import SearchProblem, SearchResult
from recourse_sim.generators.spec import GeneratorSpec

_MOVE_TOLERANCE = 1e-4  # a move counts as allowed when it changes the projected feature by more than this


class GreedySpace(FeatureSpace):
    """Feature-space state with per-copy change counters; ``step`` picks one feature per copy."""

    pure = False  # step and move update the counters

    def __init__(self, problem: SearchProblem, generators: Sequence[GeneratorSpec]) -> None:
        super().__init__(problem, generators)
        S, B, K, d = problem.shape
        device = problem.factual.device
        self.epsilon = per_system([g.step_size for g in generators], device).view(S, 1, 1, 1)
        self.n = per_system([float(g.max_changes or _default_n(g)) for g in generators], device)
        self.cap = self.n.view(S, 1, 1).expand(S, B, K).clone()
        self.passes = torch.zeros(S, B, K, device=device)
        self.counts = torch.zeros(S, B, K, d, device=device)
        self.mutable = ~problem.context.constraints.immutable

    def kernel_settings(self) -> dict[str, object]:
        """The compiled kernel's greedy moves: epsilon and the first cap n per system, (S,) each, and the seed of
        its tie-breaks, a hash of the search generator's state (so taking it draws nothing)."""
        state = self.problem.rng.get_state().numpy().tobytes()
        seed = int.from_bytes(hashlib.blake2b(state, digest_size=8).digest()) >> 2
        return {"greedy": (self.epsilon.view(-1), self.n, seed)}

    def kernel_done(self, steps: torch.Tensor) -> None:
        """Draw what the torch loop draws (one ``torch.rand`` of the full batch per iteration), so the search's
        generator ends where it would after the torch loop and every later draw is the same."""
        iterations = iterations_of_descend(steps, self.generators, self.problem.settings.check_every)
        for _ in range(iterations):
            torch.rand(self.counts.shape, generator=self.problem.rng, device=self.counts.device)

    def allowed_moves(self, work: torch.Tensor, move: torch.Tensor, index) -> torch.Tensor:
        """(S, B', K, d): would moving feature j alone by ``move[..., j]`` change it after projection?"""
        ctx = self.problem.context
        factual = self.problem.factual[:, index].unsqueeze(2)
        standardizer = ctx.standardizer
        landed = ctx.constraints.project_each(standardizer.inverse_transform(work),
                                              standardizer.inverse_transform(work + move), factual)
        changed = standardizer.transform(landed) - work
        return (changed.abs() > _MOVE_TOLERANCE) & (move != 0) & self.mutable

    def step(self, grad: torch.Tensor, work: torch.Tensor, index) -> torch.Tensor:
        S, B, K, d = work.shape
        grad = torch.nan_to_num(grad, nan=0.0)
        counts, cap, passes = self.counts[:, index], self.cap[:, index], self.passes[:, index]
        # A copy whose mutable features are all used up starts a new pass with a larger cap.
        used_up = ((counts >= cap.unsqueeze(-1)) | ~self.mutable).all(-1) & self.mutable.any()
        passes = passes + used_up
        cap = torch.where(used_up, cap + cap / passes.clamp_min(1), cap)
        self.passes[:, index], self.cap[:, index] = passes, cap
        move = -self.epsilon * torch.sign(grad)
        eligible = self.allowed_moves(work, move, index) & (counts < cap.unsqueeze(-1))
        salience = torch.where(eligible, grad.abs(), torch.full_like(grad, -1.0))
        best = salience.amax(-1, keepdim=True)
        ties = eligible & (salience == best)
        # Random tie-break: drawn at full batch size every step so the stream does not depend on compaction.
        u = torch.rand(self.counts.shape, generator=self.problem.rng, device=work.device)[:, index]
        pick = torch.argmax(ties * (1.0 + u), dim=-1, keepdim=True)
        chosen = torch.zeros_like(work).scatter_(-1, pick, 1.0) * eligible.any(-1, keepdim=True)
        return move * chosen

    def move(self, work: torch.Tensor, delta: torch.Tensor, active: torch.Tensor, index) -> torch.Tensor:
        new = super().move(work, delta, active, index)
        moved = (delta != 0) & active.view(*active.shape, 1, 1)
        self.counts[:, index] += moved.float()
        return new


def _default_n(generator: GeneratorSpec) -> float:
    """Schut et al.'s cap n: ``1 / epsilon`` when only epsilon is given (CE.jl), 10 for the default 0.1."""
    return max(1, round(1.0 / generator.step_size))


@register_strategy("greedy")
def greedy_search(problem: SearchProblem, generators: Sequence[GeneratorSpec]) -> SearchResult:
    """Greedy single-feature search (Schut et al. 2021), batched over systems, individuals and copies: in the
    compiled search kernel on the CPU where it can run, else in the torch loop."""
    return descend_or_compile(problem, generators, GreedySpace)
