"""Metrics of the recourse dynamics: pure functions on torch tensors.

Definitions follow Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse", IEEE SaTML 2023, with the
reference code AlgorithmicRecourseDynamics.jl v0.1.2 as the default wherever the paper's text and the code differ
(the paper's variants are ``definition="paper"``).

``METRICS`` (:mod:`recourse_sim.metrics.catalogue`) names every metric the simulation reports, each with its
description, plot label and unit, so scenarios, result tables, figures and the dashboard refer to them by
string and label them alike (:func:`metric_label`).
"""

from __future__ import annotations

from recourse_sim.metrics.catalogue import METRICS, MetricInfo, metric_label
from recourse_sim.metrics.mmd import MMDTest, gaussian_kernel, median_length_scale, mmd2_unbiased, mmd_permutation_test
from recourse_sim.metrics.model_shift import decisiveness, disagreement, grid_points, perturbation
from recourse_sim.metrics.performance import accuracy, f1_score
from recourse_sim.metrics.recourse import implausibility, recourse_cost, validity

__all__ = [
    "METRICS",
    "MMDTest",
    "MetricInfo",
    "accuracy",
    "decisiveness",
    "disagreement",
    "f1_score",
    "gaussian_kernel",
    "grid_points",
    "implausibility",
    "median_length_scale",
    "metric_label",
    "mmd2_unbiased",
    "mmd_permutation_test",
    "perturbation",
    "recourse_cost",
    "validity",
]
