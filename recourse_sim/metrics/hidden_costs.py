"""The hidden costs of recourse: what it does to everyone else, and to the lender (per system, per round).

Altmeyer et al. (SaTML 2023) argue that recourse has an external cost borne by others; these make it numbers.
All take stacked tensors, systems first, and reduce over the individual axis (``mask`` selects rows; an empty
selection gives NaN, like :mod:`~recourse_sim.metrics.recourse`). ``approved`` is the model's decision
``p(y = 1 | x) >= 0.5``; ``y_true`` the individuals' true labels (see :mod:`recourse_sim.simulation.outcome`).

- collateral rejections: among the *bystanders* B (individuals whose features did not change this round),
  the share approved before the retraining and rejected after it, ``|{i in B : a_i^- = 1, a_i^+ = 0}| / |B|``;
  collateral approvals the reverse flips;
- lender loss: the share of the population approved but truly negative, ``|{i : a_i = 1, y*_i = 0}| / n`` (the
  defaults a lender realises);
- truth accuracy: agreement of the decisions with the true labels on the current population,
  ``mean(a_i = y*_i)``;
- approval rate: ``mean(a_i)`` (per group, it shows whether recourse widens a gap);
- truly improved: among this round's movers M, ``|{i in M : y*_i = 0 before, y*_i = 1 after}| / |M|``.
"""

from __future__ import annotations

from torch import Tensor

from recourse_sim.metrics.recourse import masked_mean

__all__ = ["approval_rate", "collateral_flips", "lender_loss", "truly_improved", "truth_accuracy"]


def collateral_flips(approved_before: Tensor, approved_after: Tensor, bystander: Tensor) -> tuple[Tensor, Tensor]:
    """``(rejections, approvals)``: shares of bystanders whose decision flipped 1 -> 0 and 0 -> 1, (..., n) -> (...)."""
    rejected = (approved_before & ~approved_after).float()
    approved = (~approved_before & approved_after).float()
    return masked_mean(rejected, bystander), masked_mean(approved, bystander)


def lender_loss(approved: Tensor, y_true: Tensor, mask: Tensor | None = None) -> Tensor:
    """Share of individuals approved whose true label is 0, (..., n) -> (...)."""
    return masked_mean((approved & (y_true == 0)).float(), mask)


def truth_accuracy(approved: Tensor, y_true: Tensor, mask: Tensor | None = None) -> Tensor:
    """Share of individuals whose decision equals their true label, (..., n) -> (...)."""
    return masked_mean((approved.float() == y_true).float(), mask)


def approval_rate(approved: Tensor, mask: Tensor | None = None) -> Tensor:
    """Share of individuals approved, (..., n) -> (...)."""
    return masked_mean(approved.float(), mask)


def truly_improved(y_true_before: Tensor, y_true_after: Tensor, moved: Tensor) -> Tensor:
    """Share of movers whose true label went from 0 to 1, (..., B) -> (...)."""
    return masked_mean(((y_true_before == 0) & (y_true_after == 1)).float(), moved)

