"""Objective terms: ``x' = argmin yloss(M(x'), y+) + sum_i lambda_i cost_i(x, x') + sum_j lambda_j extcost_j(x')``.

Each term maps a :class:`SearchBatch` to a per-individual penalty (S, B'), summed over the K copies where
the reference code does so. Terms are frozen dataclasses, hence hashable: the engine evaluates each distinct
term once per iteration for all systems of a call and weights it per system (zero where unused), which is how
systems with different generators share one batched search.

Distances are measured in the standardised search space (CounterfactualExplanations.jl v0.1.5 computes its
penalties on the transformed state). Norms over the "K-stack" are Frobenius norms over all K copies jointly,
as in the reference code (``norm(x - x')`` on a (d, 1, K) array).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from recourse_sim.generators.problem import SearchBatch, SearchProblem

_EPS = 1e-12


def _stack_norm(diff: torch.Tensor) -> torch.Tensor:
    """Frobenius norm over the K copies and d features: (S, B, K, d) -> (S, B); finite gradient at 0."""
    return (diff.pow(2).sum((-1, -2)) + _EPS).sqrt()


class ObjectiveTerm:
    """Base class: ``prepare`` runs once per search (e.g. to sample reference points), ``__call__`` per step."""

    def prepare(self, problem: SearchProblem) -> Any:
        return None

    def __call__(self, batch: SearchBatch, prepared: Any) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Distance(ObjectiveTerm):
    """Euclidean cost ``||X' - X||`` over the K-stack (generic generator / Wachter et al. 2017 in CE.jl)."""

    def __call__(self, batch: SearchBatch, prepared: Any) -> torch.Tensor:
        return _stack_norm(batch.x_std - batch.factual_std.unsqueeze(2))


@dataclass(frozen=True)
class MADDistance(ObjectiveTerm):
    """Wachter et al. (2017) cost: ``sum_k sum_j |x'_kj - x_j| / MAD_j`` (MAD of the initial data)."""

    def prepare(self, problem: SearchProblem) -> torch.Tensor:
        mad = problem.context.mad
        if mad is None:
            mad = torch.ones(problem.factual.shape[-1], device=problem.factual.device)
        return mad.clamp_min(1e-8)

    def __call__(self, batch: SearchBatch, prepared: torch.Tensor) -> torch.Tensor:
        return ((batch.x_std - batch.factual_std.unsqueeze(2)).abs() / prepared).sum((-1, -2))


@dataclass(frozen=True)
class GravitationalPull(ObjectiveTerm):
    """External cost of the gravitational generator (Altmeyer et al. 2023): ``||X' - c||`` over the K-stack.

    ``c`` is the mean of ``n_neighbours`` = 50 rows drawn with replacement from the system's current
    target-class (y = 1) training data, drawn anew for every individual (reference code v0.1.5; the paper's
    text uses the mean of all of D1).
    """

    n_neighbours: int = 50

    def prepare(self, problem: SearchProblem) -> torch.Tensor:
        ctx = problem.context
        if ctx.data_X is None or ctx.data_y is None:
            raise ValueError("the gravitational term needs the systems' current data (SearchContext.data_X/y)")
        X = ctx.data_X.index_select(0, problem.systems)  # (S, n, d)
        weights = ctx.data_y.index_select(0, problem.systems).float()  # (S, n): sample target-class rows
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))
        S, B, _ = problem.factual.shape
        draws = torch.multinomial(weights, B * self.n_neighbours, replacement=True, generator=problem.generator)
        neighbours = torch.gather(X, 1, draws.unsqueeze(-1).expand(-1, -1, X.shape[-1]))
        centres = neighbours.view(S, B, self.n_neighbours, -1).mean(2)
        return ctx.standardizer.transform(centres)  # (S, B, d) in the search space

    def __call__(self, batch: SearchBatch, prepared: torch.Tensor) -> torch.Tensor:
        return _stack_norm(batch.x_std - prepared[:, batch.index].unsqueeze(2))


@dataclass(frozen=True)
class ClassifierLoss(ObjectiveTerm):
    """External cost of ClaPROAR (Altmeyer et al. 2023): the model's own loss ``BCE(M(x'), yhat(x'))``.

    Penalising the classifier loss at the counterfactual pushes it away from the decision boundary, where a
    retrained model would move most. Applied only once all K copies of an individual are valid, and averaged
    over the copies (reference code v0.1.5).
    """

    def __call__(self, batch: SearchBatch, prepared: Any) -> torch.Tensor:
        log_p = batch.log_p
        predicted = (log_p.detach() >= torch.log(torch.tensor(0.5))).float()
        log_not_p = torch.log1p(-log_p.exp().clamp(max=1 - 1e-6))
        bce = -(predicted * log_p + (1 - predicted) * log_not_p)
        return bce.mean(-1) * batch.all_valid.float()
