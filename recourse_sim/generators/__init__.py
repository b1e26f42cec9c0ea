"""Counterfactual generators: one batched engine, generators as declarative objective configs.

``GENERATORS`` maps a scenario name to a factory returning a :class:`GeneratorSpec`; the factory's keyword
arguments (``threshold``, ``lambda_cost``, ...) are the parameters a scenario may set.
"""

from __future__ import annotations

from recourse_sim.generators import catalogue
from recourse_sim.generators.api import generate_counterfactuals, make_context
from recourse_sim.generators.constraints import FeatureConstraints
from recourse_sim.generators.engine import STRATEGIES, search
from recourse_sim.generators.problem import SearchContext, SearchResult, SearchSettings
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.generators.terms import ClassifierLoss, Distance, GravitationalPull, MADDistance, ObjectiveTerm
from recourse_sim.registry import Registry

GENERATORS: Registry = Registry("generator")
for _name in ("generic", "wachter", "gravitational", "claproar"):
    GENERATORS.register(_name, getattr(catalogue, _name))

__all__ = [
    "GENERATORS", "STRATEGIES", "ClassifierLoss", "Distance", "FeatureConstraints", "GeneratorSpec",
    "GravitationalPull", "MADDistance", "ObjectiveTerm", "SearchContext", "SearchResult", "SearchSettings",
    "generate_counterfactuals", "make_context", "search",
]
