"""Model-side mitigations that train a classifier with counterfactuals: Counterfactual Training (CT).

This layer sits above ``generators`` (CT searches counterfactuals with the package's engine) and below
``simulation`` and ``experiments``, which use it without importing it (the simulation hands its search context to
any model that asks for one) or build it from a scenario's ``training`` key.
"""

from __future__ import annotations

from recourse_sim.training.ct import CounterfactualTraining
from recourse_sim.training.objective import OBJECTIVES

__all__ = ["OBJECTIVES", "CounterfactualTraining"]
