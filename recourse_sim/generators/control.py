"""The no-recourse control: a generator entry whose recipients are chosen but never move.

Retraining alone shifts a model (warm starts, a fresh optimiser each round, dropout), so a shift measured
against the round-0 model mixes what recourse did with what retraining does anyway. The control system has
the same data, model, seeds, recipients and retraining schedule as every other system of its repetition and
differs only in the cause: its recipients do not act. ``system - paired control`` is then the effect
attributable to recourse (see :mod:`recourse_sim.reporting.attribution`).

In a scenario: ``generators = ["generic", "none"]``. The simulation reads :attr:`GeneratorSpec.moves`; the
engine's ``"none"`` strategy returns the factuals themselves (no search, no random draws), so a control costs
nothing in the search and never perturbs the other systems' counterfactuals.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recourse_sim.generators.engine import register_strategy, score
from recourse_sim.generators.problem import SearchProblem, SearchResult
from recourse_sim.generators.spec import CONTROL_STRATEGY, GeneratorSpec

CONTROL = "none"  # the generator name of the no-recourse control in scenarios and result tables


def none() -> GeneratorSpec:
    """No recourse: recipients are chosen like everyone else's but do not move (the paired control)."""
    return GeneratorSpec(CONTROL, strategy=CONTROL_STRATEGY, max_steps=0)


@register_strategy(CONTROL_STRATEGY)
def stay(problem: SearchProblem, generators: Sequence[GeneratorSpec]) -> SearchResult:
    """The factuals as their own K "counterfactuals", with the model's p(y=1) there; nothing converges."""
    S, B, K, d = problem.shape
    x = problem.factual.unsqueeze(2).expand(S, B, K, d)
    with torch.no_grad():
        proba = score(problem, x).exp()
    return SearchResult(
        counterfactuals=x.clone(), proba=proba,
        converged=torch.zeros(S, B, dtype=torch.bool, device=x.device),
        steps=torch.zeros(S, B, dtype=torch.long, device=x.device),
    )
