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

__all__ = ["implausibility", "masked_mean", "nearest_target_distance", "recourse_cost", "validity"]

#: ECCCo's implausibility: the mean distance to the 100 nearest target-class points (ECCCo.jl).
IMPLAUSIBILITY_NEIGHBOURS = 100
#: Memory per chunk of a cdist in :func:`nearest_target_distance` (counterfactuals x reference rows).
_CDIST_CHUNK_BYTES = 64 * 2**20


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


def implausibility(counterfactuals: Tensor, X: Tensor, y: Tensor, *, target: int = 1,
                   k: int = IMPLAUSIBILITY_NEIGHBOURS) -> Tensor:
    """Mean Euclidean distance of each counterfactual to its ``k`` nearest target-class points in ``X``.

    ``counterfactuals`` (..., d) -> (...); lower is more plausible (the SaTML 2023 / ECCCo "implausibility",
    k = 100, or the number of target-class points if fewer). One system of :func:`nearest_target_distance`.
    """
    cf = torch.as_tensor(counterfactuals, dtype=torch.float32)
    X = torch.as_tensor(X, dtype=torch.float32, device=cf.device)
    is_target = torch.as_tensor(y, device=cf.device) == target
    if not is_target.any():
        raise DataError(f"implausibility: no points of the target class {target} to compare with")
    flat = cf.reshape(1, -1, cf.shape[-1])
    return nearest_target_distance(flat, X, is_target, k=k)[0].reshape(cf.shape[:-1])


def nearest_target_distance(
    points: Tensor,
    reference: Tensor,
    reference_mask: Tensor,
    *,
    k: int = IMPLAUSIBILITY_NEIGHBOURS,
    exclude: Tensor | None = None,
) -> Tensor:
    """Mean Euclidean distance of every point to its ``k`` nearest reference rows, ``(S, m)``.

    The per-point value of ECCCo's implausibility (``distance_from_targets_l2``, k = 100); for one system without
    ``exclude`` it is :func:`implausibility`. Where a system has fewer than ``k``
    reference rows, all of them count (NaN where it has none).

    Args:
        points: Counterfactuals ``(S, m, d)``.
        reference: Reference rows ``(S, n, d)``, or ``(n, d)`` shared by every system.
        reference_mask: Boolean ``(S, n)`` or ``(n,)``: the rows that count (the target class).
        k: How many nearest reference rows to average (default 100).
        exclude: Optional ``(S, m)`` index of each point's own row in ``reference`` (-1: none), left out of its
            neighbours: a counterfactual that is itself a reference row is not its own neighbour at distance 0.

    Returns:
        ``(S, m)`` mean distances.
    """
    points = point_stack(points, "points")
    S, m, d = points.shape
    reference = reference.to(points).expand(S, -1, -1) if reference.dim() == 2 else reference.to(points)
    reference_mask = reference_mask.to(torch.bool).expand(S, -1)
    if reference.shape[:1] != (S,) or reference.shape[-1] != d or reference_mask.shape != reference.shape[:2]:
        raise DataError(f"nearest_target_distance: points {tuple(points.shape)}, reference {tuple(reference.shape)} "
                        f"and reference_mask {tuple(reference_mask.shape)} do not match")
    n = reference.shape[1]
    out = torch.full((S, m), float("nan"), dtype=points.dtype, device=points.device)
    if n == 0 or m == 0:
        return out
    k = min(k, n)
    inf = torch.tensor(float("inf"), dtype=points.dtype, device=points.device)
    chunk = max(1, _CDIST_CHUNK_BYTES // (3 * S * n * points.element_size()))
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        distances = torch.cdist(points[:, start:stop], reference)  # (S, c, n)
        distances = distances.masked_fill(~reference_mask.unsqueeze(1), float("inf"))
        if exclude is not None:
            own = exclude[:, start:stop].to(device=points.device, dtype=torch.long).unsqueeze(-1)
            at_own = distances.gather(-1, own.clamp_min(0))
            distances.scatter_(-1, own.clamp_min(0), torch.where(own >= 0, inf, at_own))
        nearest = distances.topk(k, dim=-1, largest=False).values
        counted = torch.isfinite(nearest)  # fewer than k reference rows: the masked ones come back as inf
        total = torch.where(counted, nearest, torch.zeros((), dtype=points.dtype, device=points.device)).sum(-1)
        out[:, start:stop] = total / counted.sum(-1).to(points.dtype)
    return out


def point_stack(points: Tensor, name: str) -> Tensor:
    """``points`` as floating ``(S, m, d)``."""
    if not isinstance(points, Tensor) or points.dim() != 3:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise DataError(f"{name}: expected a stack of points (S, m, d), got {shape}")
    return points if points.is_floating_point() else points.to(torch.get_default_dtype())
