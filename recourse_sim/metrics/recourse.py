"""Counterfactual quality: validity, cost (distance moved) and implausibility.

Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse", IEEE SaTML 2023; validity and cost as
reported by CounterfactualExplanations.jl, which the reference code AlgorithmicRecourseDynamics.jl v0.1.2 uses.

Both reduce over the individual axis only, keeping leading dims (e.g. systems). Because the simulation keeps
shapes fixed across rounds, an optional boolean ``mask`` (same shape as that axis plus leading dims) selects the
rows that count; a row set with no selected rows gives NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recourse_sim.errors import DataError
from recourse_sim.models.base import DECISION_THRESHOLD

__all__ = ["implausibility", "masked_mean", "recourse_cost", "validity"]


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over the last axis of the rows ``mask`` selects (all rows without a mask); NaN for none."""
    if mask is None:
        return values.mean(-1)
    mask = mask.to(torch.bool)
    # 0/0 -> NaN for an empty selection: "no counterfactuals" is not "all invalid".
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum(-1)
    return total / mask.sum(-1).to(values.dtype)


def validity(p_cf: Tensor, threshold: float = DECISION_THRESHOLD, *, mask: Tensor | None = None) -> Tensor:
    """Share of counterfactuals classified in the target class, ``mean(p_cf >= threshold)``.

    Args:
        p_cf: Target-class probabilities of the counterfactuals ``(..., B)``.
        threshold: Decision threshold (default :data:`DECISION_THRESHOLD`, 0.5: the classifier's own).
        mask: Optional boolean ``(..., B)`` selecting the counterfactuals that count.

    Returns:
        ``(...)`` shares in [0, 1] (NaN where ``mask`` selects nothing).
    """
    if p_cf.dim() == 0:
        raise DataError("validity: p_cf must have an individual axis, got a scalar")
    dtype = p_cf.dtype if p_cf.is_floating_point() else torch.get_default_dtype()
    return masked_mean((p_cf >= threshold).to(dtype), mask)


def recourse_cost(x_factual: Tensor, x_cf: Tensor, p: float = 2, *, mask: Tensor | None = None) -> Tensor:
    """Mean L_p distance between factuals and their counterfactuals (default Euclidean, ``p=2``).

    Args:
        x_factual: Factual rows ``(..., B, d)``.
        x_cf: Counterfactual rows ``(..., B, d)``; leading dims broadcast.
        p: Order of the norm (default 2).
        mask: Optional boolean ``(..., B)`` selecting the rows that count.

    Returns:
        ``(...)``, e.g. ``(S,)`` for inputs ``(S, B, d)`` (NaN where ``mask`` selects nothing).

    Raises:
        DataError: If the inputs are not at least 2-D with matching ``(B, d)`` axes.
    """
    if x_factual.dim() < 2 or x_cf.dim() < 2 or x_factual.shape[-2:] != x_cf.shape[-2:]:
        raise DataError(
            f"recourse_cost: x_factual and x_cf must both be (..., B, d) with the same B and d, "
            f"got {tuple(x_factual.shape)} and {tuple(x_cf.shape)}"
        )
    diff = x_cf - x_factual
    if not diff.is_floating_point():
        diff = diff.to(torch.get_default_dtype())
    return masked_mean(torch.linalg.vector_norm(diff, ord=p, dim=-1), mask)


def implausibility(counterfactuals: Tensor, X: Tensor, y: Tensor, *, target: int = 1, k: int = 100) -> Tensor:
    """Mean Euclidean distance of each counterfactual to its ``k`` nearest target-class points in ``X``.

    ``counterfactuals`` (..., d) -> (...); lower is more plausible (the SaTML 2023 / ECCCo "implausibility",
    k = 100, or the number of target-class points if fewer).
    """
    cf = torch.as_tensor(counterfactuals, dtype=torch.float32)
    X = torch.as_tensor(X, dtype=torch.float32, device=cf.device)
    reference = X[torch.as_tensor(y, device=cf.device) == target]
    if len(reference) == 0:
        raise DataError(f"implausibility: no points of the target class {target} to compare with")
    k = min(k, len(reference))
    flat = cf.reshape(-1, cf.shape[-1])
    distances = torch.cdist(flat, reference).topk(k, dim=1, largest=False).values.mean(1)
    return distances.reshape(cf.shape[:-1])
