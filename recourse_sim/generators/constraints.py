"""Feature constraints enforced by the search engine on every step, for every generator.

Order of projection (feature space): bounds, then one-hot groups, then actionability, so an immutable
feature keeps its factual value exactly even if the factual itself sits on a bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from recourse_sim.data.schema import FeatureSchema
from recourse_sim.errors import DataError


@dataclass(frozen=True)
class FeatureConstraints:
    """Boolean masks and bounds of a :class:`FeatureSchema` as tensors on the search device."""

    immutable: torch.Tensor  # (d,) bool
    increase_only: torch.Tensor  # (d,) bool
    decrease_only: torch.Tensor  # (d,) bool
    lower: torch.Tensor  # (d,)
    upper: torch.Tensor  # (d,)
    groups: tuple[torch.Tensor, ...]  # column indices of each one-hot group
    # Which kinds of constraint exist at all, as Python booleans: projecting an unconstrained problem then
    # costs no kernel launches (the projection runs on every search step).
    active: frozenset[str] = frozenset()

    @classmethod
    def from_schema(cls, schema: FeatureSchema, device: torch.device | str = "cpu") -> FeatureConstraints:
        mut = schema.mutability

        def mask(kind: str) -> torch.Tensor:
            return torch.tensor([m == kind for m in mut], dtype=torch.bool, device=device)

        active = {kind for kind in ("none", "increase", "decrease") if kind in mut}
        if any(math.isfinite(v) for v in schema.lower + schema.upper):
            active.add("bounds")
        return cls(
            immutable=mask("none"),
            increase_only=mask("increase"),
            decrease_only=mask("decrease"),
            lower=torch.tensor(schema.lower, dtype=torch.float32, device=device),
            upper=torch.tensor(schema.upper, dtype=torch.float32, device=device),
            groups=tuple(torch.tensor(g, dtype=torch.long, device=device) for g in schema.categorical_groups),
            active=frozenset(active),
        )

    @property
    def has_groups(self) -> bool:
        return bool(self.groups)

    def check_factuals(self, factual: torch.Tensor, names: tuple[str, ...]) -> None:
        """Refuse factuals outside the bounds: no counterfactual could then satisfy the constraints."""
        below = factual < self.lower - 1e-6
        above = factual > self.upper + 1e-6
        bad = (below | above).reshape(-1, factual.shape[-1]).any(0)
        if bad.any():
            j = int(bad.nonzero()[0])
            raise DataError(
                f"feature {names[j]!r}: factual values lie outside its bounds "
                f"[{self.lower[j].item()}, {self.upper[j].item()}]; widen the schema bounds or fix the data"
            )

    def project(self, x: torch.Tensor, factual: torch.Tensor, straight_through: bool = False) -> torch.Tensor:
        """Map candidates ``x`` (..., d) onto the feasible set given ``factual`` (broadcastable to ``x``).

        With ``straight_through`` the one-hot projection passes gradients to the relaxed values
        (straight-through estimator), so a gradient search can still flip a category.
        """
        x = self._clamp(x)
        for group in self.groups:
            relaxed = x[..., group]
            hard = F.one_hot(relaxed.argmax(-1), group.numel()).to(x.dtype)
            hard = relaxed + (hard - relaxed).detach() if straight_through else hard
            x = _scatter_columns(x, group, hard)
        return self._actionable(x, factual)

    def project_each(self, x: torch.Tensor, moved: torch.Tensor, factual: torch.Tensor) -> torch.Tensor:
        """Where each feature lands when it alone moves: ``out[..., j] = project(x with x_j <- moved_j)[..., j]``.

        ``x`` (..., d) is feasible (a projected state). The result equals projecting d trial points, one per
        feature, but costs a few passes over (..., d) instead of one projection of (..., d, d): bounds and
        actionability act feature by feature, and a one-hot column is hot after its own move iff its moved
        value wins the group's ``argmax`` against the group's other columns (ties go to the lower index).
        Used by the greedy search to find the moves the constraints allow.
        """
        x, moved = self._clamp(x), self._clamp(moved)
        for group in self.groups:
            moved = moved.index_copy(-1, group, _wins_group(x[..., group], moved[..., group]))
        return self._actionable(moved, factual)

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Bounds, feature by feature (the first step of a projection)."""
        if "bounds" in self.active:
            x = torch.maximum(torch.minimum(x, self.upper), self.lower)
        return x

    def _actionable(self, x: torch.Tensor, factual: torch.Tensor) -> torch.Tensor:
        """Increase-only, decrease-only and immutable features relative to ``factual`` (the last step)."""
        factual = factual.expand_as(x)
        if "increase" in self.active:
            x = torch.where(self.increase_only, torch.maximum(x, factual), x)
        if "decrease" in self.active:
            x = torch.where(self.decrease_only, torch.minimum(x, factual), x)
        if "none" in self.active:
            x = torch.where(self.immutable, factual, x)
        return x

    def step_mask(self) -> torch.Tensor:
        """1 for features the search may move, 0 for immutable ones (saves gradient work on them)."""
        return (~self.immutable).float()


def _scatter_columns(x: torch.Tensor, columns: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Out-of-place, autograd-friendly replacement of ``x[..., columns]`` by ``values``."""
    mask = torch.zeros(x.shape[-1], dtype=torch.bool, device=x.device)
    mask[columns] = True
    full = torch.zeros_like(x).index_copy(-1, columns, values)
    return torch.where(mask, full, x)


def _wins_group(current: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """For each column j of a one-hot group: 1.0 if ``argmax`` picks j once j alone takes ``moved[..., j]``.

    The rival of column j is the best of the *other* columns: the group's first maximum, or for that column
    itself the best of the rest (found by masking it out).
    """
    position = torch.arange(current.shape[-1], device=current.device)
    first = current.argmax(-1, keepdim=True)
    top = current.gather(-1, first)
    rest = current.scatter(-1, first, float("-inf"))
    second_index = rest.argmax(-1, keepdim=True)
    second = rest.gather(-1, second_index)
    is_first = position == first
    rival = torch.where(is_first, second, top)
    rival_index = torch.where(is_first, second_index, first)
    wins = (moved > rival) | ((moved == rival) & (position < rival_index))
    return wins.to(moved.dtype)
