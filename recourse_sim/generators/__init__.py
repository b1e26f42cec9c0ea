"""Counterfactual generators: one batched engine, generators as declarative objective configs.

``GENERATORS`` maps a scenario name to a factory returning a :class:`GeneratorSpec`; the factory's keyword
arguments (``threshold``, ``lambda_cost``, ...) are the parameters a scenario may set.
"""

from __future__ import annotations

from recourse_sim.generators import catalogue, control, greedy, latent  # these register their strategies
from recourse_sim.generators.api import generate_counterfactuals, make_context
from recourse_sim.generators.constraints import FeatureConstraints
from recourse_sim.generators.engine import STRATEGIES, search
from recourse_sim.generators.latent import LatentCache
from recourse_sim.generators.problem import SearchContext, SearchResult, SearchSettings
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.generators.terms import (
    ClassifierLoss, ConformalSetSize, Distance, DPPDiversity, Energy, GravitationalPull, L1Distance, MADDistance,
    ObjectiveTerm,
)
from recourse_sim.metrics.conformal import conformal_set_size
from recourse_sim.registry import Registry

GENERATORS: Registry = Registry("generator")
for _name in ("generic", "wachter", "gravitational", "claproar", "greedy", "revise", "clue", "dice", "eccco"):
    GENERATORS.register(_name, getattr(catalogue, _name))
GENERATORS.register(control.CONTROL, control.none)

__all__ = [
    "GENERATORS", "STRATEGIES", "ClassifierLoss", "ConformalSetSize", "DPPDiversity", "Distance", "Energy",
    "FeatureConstraints", "GeneratorSpec", "GravitationalPull", "L1Distance", "LatentCache", "MADDistance",
    "ObjectiveTerm", "SearchContext", "SearchResult", "SearchSettings", "conformal_set_size",
    "generate_counterfactuals", "make_context", "search",
]
