"""Split conformal prediction for the binary classifiers (ECCCo, Altmeyer et al., AAAI 2024): the calibration
threshold q̂ and the smooth set-size penalty Omega.

One home for both users: ECCCo's search term (:class:`~recourse_sim.generators.terms.ConformalSetSize`) and the
faithfulness metrics (:mod:`recourse_sim.metrics.faithfulness`: set size and uncertainty at the counterfactuals).
The defaults are ECCCo's: coverage 0.95, temperature T = 0.1, kappa = 1.
"""

from __future__ import annotations

import math

import torch

#: ECCCo's defaults: the conformal coverage 1 - alpha, the smoothing temperature T and the set-size offset kappa.
COVERAGE = 0.95
TEMPERATURE = 0.1
KAPPA = 1.0


def conformal_set_size(proba: torch.Tensor, q_hat: torch.Tensor | float, temperature: float = TEMPERATURE,
                       kappa: float = KAPPA) -> torch.Tensor:
    """Smooth conformal set-size penalty (Stutz et al. 2022 as used by ECCCo): class probabilities (..., C)
    -> (...).

    ``s_y = 1 - p_y`` (the split-conformal score), ``C_y = sigmoid((q_hat - s_y) / T)``,
    ``Omega = max(0, sum_y C_y - kappa)``; where the hard set ``{y : s_y <= q_hat}`` is empty, ``sum_y (1 - C_y)``
    replaces ``sum_y C_y`` (ConformalPrediction.jl). Zero for a singleton set when kappa = 1, growing with the
    set size.
    """
    q_hat = torch.as_tensor(q_hat, dtype=proba.dtype, device=proba.device)
    score = 1.0 - proba
    soft = torch.sigmoid((q_hat.unsqueeze(-1) - score) / temperature)
    empty = ~(score <= q_hat.unsqueeze(-1)).any(-1)
    size = torch.where(empty, (1.0 - soft).sum(-1), soft.sum(-1))
    return torch.relu(size - kappa)


def conformal_quantile(scores: torch.Tensor, coverage: float) -> torch.Tensor:
    """Split-conformal threshold: the ``ceil((n + 1) * coverage) / n`` empirical quantile of ``scores`` (..., n)."""
    n = scores.shape[-1]
    k = min(n, max(1, math.ceil((n + 1) * coverage)))
    return scores.sort(-1).values[..., k - 1]
