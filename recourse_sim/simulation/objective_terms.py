"""The generators' objective terms, evaluated at the points recipients actually moved to.

Every system is scored on the same terms whatever its generator searched with, so the individual and external
costs of recourse compare across generators (Altmeyer et al., SaTML 2023: ``yloss + lambda1 cost + lambda2
extcost``). The terms are the search's own (:mod:`recourse_sim.generators.terms`), in the search space, with one
copy per individual (K = 1):

- ``term_yloss``: ``-log p(y = 1 | x')``, the cross-entropy toward the target;
- ``term_cost``: ``||x' - x||_2``, the individual cost (the generic generator's);
- ``term_extcost_gravity``: ``||x' - c||_2`` with ``c`` the mean of the system's current target-class data
  (the gravitational generator's external cost, the paper's deterministic centre of D1);
- ``term_extcost_loss``: ``BCE(M(x'), yhat(x'))``, the model's own loss at the point (ClaPROAR's external cost;
  applied where the point is valid, as in the search).
"""

from __future__ import annotations

import torch

from recourse_sim.generators.problem import SearchBatch, SearchContext, SearchProblem, SearchSettings
from recourse_sim.generators.terms import ClassifierLoss, Distance, GravitationalPull
from recourse_sim.models.base import LOG_DECISION_THRESHOLD

TERM_METRICS = ("term_yloss", "term_cost", "term_extcost_gravity", "term_extcost_loss")
_ONE_COPY = SearchSettings(n_counterfactuals=1)


def implemented_terms(model, context: SearchContext, factual: torch.Tensor, moved_to: torch.Tensor,
                      log_p: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each term of :data:`TERM_METRICS` per individual (S, B) for factuals and points (S, B, d), ``log_p`` (S, B)
    the model's log p(y = 1) at the points; ``context.data_X``/``data_y`` the systems' data the search saw."""
    S, B, _ = factual.shape
    systems = torch.arange(S, device=factual.device)
    problem = SearchProblem(model=model, factual=factual, systems=systems, context=context, settings=_ONE_COPY,
                            rng=torch.Generator(device=factual.device))
    x = moved_to.unsqueeze(2)
    log_p = log_p.unsqueeze(2)
    batch = SearchBatch(problem, x, context.standardizer.transform(x), log_p,
                        (log_p >= LOG_DECISION_THRESHOLD).all(-1), torch.arange(B, device=factual.device))
    positives = context.data_y.unsqueeze(-1)
    centre = (context.data_X * positives).sum(1) / positives.sum(1).clamp_min(1)  # (S, d): mean of D1
    centres = context.standardizer.transform(centre).unsqueeze(1).expand(S, B, -1)
    with torch.no_grad():
        return {
            "term_yloss": -log_p.squeeze(2),
            "term_cost": Distance()(batch, None),
            "term_extcost_gravity": GravitationalPull()(batch, centres),
            "term_extcost_loss": ClassifierLoss()(batch, None),
        }
