"""Metrics of the recourse dynamics: pure functions on torch tensors.

Definitions follow Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse", IEEE SaTML 2023, with the
reference code AlgorithmicRecourseDynamics.jl v0.1.2 as the default wherever the paper's text and the code differ
(the paper's variants are ``definition="paper"``).

``METRICS`` names every metric the simulation reports (name -> one-line description), so scenarios and result
tables can refer to them by string.
"""

from __future__ import annotations

from recourse_sim.metrics.mmd import MMDTest, gaussian_kernel, median_length_scale, mmd2_unbiased, mmd_permutation_test
from recourse_sim.metrics.model_shift import decisiveness, disagreement, grid_points, perturbation
from recourse_sim.metrics.performance import accuracy, f1_score
from recourse_sim.metrics.recourse import recourse_cost, validity
from recourse_sim.registry import Registry

__all__ = [
    "METRICS",
    "MMDTest",
    "accuracy",
    "decisiveness",
    "disagreement",
    "f1_score",
    "gaussian_kernel",
    "grid_points",
    "median_length_scale",
    "mmd2_unbiased",
    "mmd_permutation_test",
    "perturbation",
    "recourse_cost",
    "validity",
]

METRICS: Registry[str] = Registry("metric")

for _name, _description in {
    "domain_mmd": "Unbiased MMD^2 between the current training positives and the never-moved held-out (test) "
    "positives (default; Gaussian kernel, median-heuristic length-scale, <=1000 samples per side); "
    "domain_reference='initial': the reference code's initial positives (train+test at t=0) vs current positives",
    "domain_mmd_pvalue": "Permutation p-value of domain_mmd (100 permutations, share of null >= observed)",
    "model_mmd": "Unbiased MMD^2 between the initial and current models' predicted probabilities on the "
    "initial X (PP-MMD)",
    "model_mmd_pvalue": "Permutation p-value of model_mmd",
    "model_mmd_grid": "PP-MMD on 1000 random points of a 100-step lattice spanning each feature's range",
    "model_mmd_grid_pvalue": "Permutation p-value of model_mmd_grid",
    "perturbation": "Parameter change: mean over tensors of ||theta_t - theta_0||_2 / numel (code); paper: "
    "sum ||theta_t - theta_{t-1}||^2",
    "disagreement": "Share of initial X whose label differs between the initial and current model",
    "decisiveness": "| ||p_0 - 0.5||_2 - ||p_t - 0.5||_2 | over initial X (code); paper: mean (p_t - 0.5)^2",
    "accuracy": "Accuracy of the current model on the untouched test set",
    "f1": "Macro F1 of the current model on the untouched test set",
    "f1_change": "F1 on the test set minus the initial model's F1 (round 0)",
    "validity": "Share of this round's counterfactuals classified in the target class",
    "recourse_cost": "Mean Euclidean distance between factuals and their counterfactuals",
    "n_recourse": "Number of individuals given recourse this round",
    "n_nonfinite": "Recipients whose chosen counterfactual was not a finite point (a diverged search); they do "
    "not move and are left out of validity and cost",
    "search_steps": "Mean number of counterfactual search iterations this round",
    **{
        f"reliability_lag{lag}": f"Share of individuals whose latest recourse was {lag} round(s) ago that the "
        "model, after this round's retraining, still approves"
        for lag in (0, 1, 5, 10)
    },
}.items():
    METRICS.register(_name, _description)
del _name, _description
