"""Feature schema: names, actionability (mutability), bounds and categorical one-hot groups."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from recourse_sim.errors import ConfigError

Mutability = Literal["both", "increase", "decrease", "none"]
MUTABILITIES: tuple[str, ...] = get_args(Mutability)


@dataclass(frozen=True)
class FeatureSchema:
    """What an individual may change, feature by feature.

    ``mutability[j]`` is ``"both"`` (free), ``"increase"`` (e.g. age), ``"decrease"`` or ``"none"``
    (immutable, e.g. a protected attribute). ``lower``/``upper`` are bounds in the *feature* space (not the
    standardised one); ``categorical_groups`` lists column indices that form one one-hot group each.
    """

    names: tuple[str, ...]
    mutability: tuple[Mutability, ...] = ()
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()
    categorical_groups: tuple[tuple[int, ...], ...] = field(default=())

    def __post_init__(self) -> None:
        d = len(self.names)
        # Empty tuples mean "unconstrained": fill them so downstream code never special-cases.
        if not self.mutability:
            object.__setattr__(self, "mutability", ("both",) * d)
        if not self.lower:
            object.__setattr__(self, "lower", (-math.inf,) * d)
        if not self.upper:
            object.__setattr__(self, "upper", (math.inf,) * d)
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "mutability", tuple(self.mutability))
        object.__setattr__(self, "lower", tuple(float(v) for v in self.lower))
        object.__setattr__(self, "upper", tuple(float(v) for v in self.upper))
        object.__setattr__(self, "categorical_groups", tuple(tuple(g) for g in self.categorical_groups))
        self._validate()

    def _validate(self) -> None:
        d = len(self.names)
        if len(set(self.names)) != d:
            raise ConfigError("schema.names", list(self.names), "unique feature names")
        for attr in ("mutability", "lower", "upper"):
            if len(getattr(self, attr)) != d:
                raise ConfigError(f"schema.{attr}", len(getattr(self, attr)), f"one entry per feature ({d})")
        for name, m in zip(self.names, self.mutability):
            if m not in MUTABILITIES:
                raise ConfigError(f"schema.mutability[{name}]", m, f"one of {', '.join(MUTABILITIES)}")
        for name, lo, hi in zip(self.names, self.lower, self.upper):
            if math.isnan(lo) or math.isnan(hi) or lo > hi:
                raise ConfigError(f"schema.bounds[{name}]", (lo, hi), "lower <= upper, no NaN")
        seen: set[int] = set()
        for group in self.categorical_groups:
            if len(group) < 2 or any(not 0 <= j < d for j in group) or seen & set(group):
                raise ConfigError(
                    "schema.categorical_groups", group, f"disjoint groups of >= 2 column indices in [0, {d})"
                )
            seen |= set(group)
            kinds = {self.mutability[j] for j in group}
            if not kinds <= {"both"} and kinds != {"none"}:
                # A one-hot group moves as a whole: one category is left for another, so "increase only" on a
                # single column has no meaning; the group is either free or immutable.
                raise ConfigError(
                    f"schema.mutability[{', '.join(self.names[j] for j in group)}]", sorted(kinds),
                    'the same mutability for every column of a one-hot group, "both" or "none"',
                )

    @classmethod
    def unconstrained(cls, names: Sequence[str]) -> FeatureSchema:
        """Every feature free and unbounded."""
        return cls(names=tuple(names))

    @property
    def n_features(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ConfigError("feature", name, f"one of {', '.join(self.names)}") from None

    def with_updates(
        self,
        mutability: dict[str, Mutability] | None = None,
        bounds: dict[str, tuple[float, float]] | None = None,
    ) -> FeatureSchema:
        """A copy with some features' mutability and/or bounds replaced (by feature name)."""
        mut, lo, hi = list(self.mutability), list(self.lower), list(self.upper)
        for name, m in (mutability or {}).items():
            mut[self.index(name)] = m
        for name, (a, b) in (bounds or {}).items():
            lo[self.index(name)], hi[self.index(name)] = a, b
        return FeatureSchema(self.names, tuple(mut), tuple(lo), tuple(hi), self.categorical_groups)
