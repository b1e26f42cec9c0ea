"""People, not points: how the recipients of recourse act on it (the ``[agents]`` table of a scenario).

The reference protocol (Altmeyer et al., SaTML 2023) is one corner of the space, and the default here: every
recipient acts, picks one of its K counterfactuals at random, moves all the way, and takes the model's
prediction there as its new label. :class:`AgentSettings` opens the rest:

- **compliance**: a recipient acts with probability ``pi_i * exp(-cost_aversion * c_i)``, where ``pi_i`` is a
  per-individual propensity (a number, or drawn once per individual from a distribution) and ``c_i`` the
  individual's cost of the chosen counterfactual;
- **partial moves**: an actor moves the fraction ``f_i`` of the way, ``x + f_i (x' - x)`` (projected onto the
  feature constraints, so a one-hot group stays one-hot), and a personal **budget** ``b_i`` caps the cost:
  recourse above it is refused (``over_budget = "refuse"``) or followed until the budget is spent
  (``"partial"``);
- **cost sensitivity**: the individual's cost is ``c_i(x') = sum_j w_ij |x'_j - x_j| / s_j`` (effort adds up
  over features; ``s_j`` the search space's scale, so one unit is one standard deviation of the initial data),
  with weights per feature (``cost_weights``), per group (``group_cost_weights``) and a per-individual
  log-normal spread; it drives the choice among the K counterfactuals (``choice``: ``"random"``,
  ``"cheapest"`` valid, ``"most_confident"``), compliance and the budget, and is reported;
- **groups**: a group attribute (a categorical attribute of the data card such as ``"SEX"``, a feature split
  at a threshold, or a random split) with the recourse metrics reported per group;
- **outcome**: what a mover's label becomes (see :mod:`~recourse_sim.simulation.outcome`).

Traits are drawn once per individual and shared by every system (row ``i`` is the same person everywhere),
and the per-round draws (who complies, the true outcome) are common random numbers shared across systems: the
draws are part of the pairing. They come from a stream of their own (:func:`agent_rng`), so the reference
protocol's draws are the same with or without agents, and changing one option leaves the other draws alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from recourse_sim.data.dataset import Dataset
from recourse_sim.errors import ConfigError
from recourse_sim.models.base import DECISION_THRESHOLD
from recourse_sim.settings import check_fields, require

Outcome = Literal["model", "truth", "unchanged"]
TruthSource = Literal["auto", "exact", "oracle", "none"]
Choice = Literal["random", "cheapest", "most_confident"]
OverBudget = Literal["refuse", "partial"]
#: A trait: a number (everyone alike) or a table ``{distribution = ..., ...}`` drawn once per individual.
TraitSetting = float | Mapping[str, Any]

#: Parameters of each trait distribution, in the order a table lists them.
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "uniform": ("low", "high"),
    "beta": ("mean", "concentration"),  # Beta(mean * c, (1 - mean) * c): a share around ``mean``
    "lognormal": ("median", "sigma"),  # exp(N(log median, sigma^2)): a positive amount
}
#: The groups of a random split (``groups = "random"``): ``group_share`` of the individuals are in the first.
RANDOM_GROUPS = ("group_a", "group_b")
#: The options of how recipients act (as opposed to what their label becomes, and to groups).
_BEHAVIOUR = ("choice", "compliance", "cost_aversion", "move_fraction", "budget", "cost_weights",
              "group_cost_weights", "cost_weight_spread")
#: The spawn key of the agents' random stream (see :func:`agent_rng`).
_AGENT_STREAM = 1


@dataclass(frozen=True)
class Trait:
    """A per-individual value: ``distribution`` with its parameters (see :data:`DISTRIBUTIONS`)."""

    distribution: str
    params: tuple[float, ...]

    @classmethod
    def parse(cls, field_name: str, setting: TraitSetting, domain: str) -> Trait:
        """``setting`` as a trait, checked against ``domain``: ``"share"`` [0, 1], ``"fraction"`` (0, 1] or
        ``"amount"`` (0, inf)."""
        if isinstance(setting, bool) or not isinstance(setting, (int, float, Mapping)):
            raise ConfigError(field_name, setting, "a number or a table {distribution = ..., ...}")
        if not isinstance(setting, Mapping):
            trait = cls("constant", (float(setting),))
        else:
            name = setting.get("distribution")
            if name not in DISTRIBUTIONS:
                raise ConfigError(f"{field_name}.distribution", name, f"one of {', '.join(DISTRIBUTIONS)}")
            names = DISTRIBUTIONS[name]
            extra = sorted(set(setting) - {"distribution", *names})
            missing = [p for p in names if p not in setting]
            if extra or missing:
                raise ConfigError(f"{field_name}", dict(setting),
                                  f"a {name} distribution with exactly the keys {', '.join(names)}")
            for p in names:
                value = setting[p]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ConfigError(f"{field_name}.{p}", value, "a finite number")
            trait = cls(name, tuple(float(setting[p]) for p in names))
        trait._check(field_name, domain)
        return trait

    def _check(self, field_name: str, domain: str) -> None:
        kind, params = self.distribution, self.params
        low, high = {"share": (0.0, 1.0), "fraction": (0.0, 1.0), "amount": (0.0, math.inf)}[domain]
        open_low = domain in ("fraction", "amount")
        allowed = {"share": "a probability in [0, 1]", "fraction": "a share in (0, 1]", "amount": "a number > 0"}[domain]

        def inside(value: float) -> bool:
            return (value > low if open_low else value >= low) and value <= high

        if kind == "constant":
            require(inside(params[0]), field_name, params[0], allowed)
        elif kind == "uniform":
            lo, hi = params
            require(inside(lo) and inside(hi) and lo <= hi, field_name, {"low": lo, "high": hi},
                    f"low <= high, both {allowed}")
        elif kind == "beta":
            require(domain != "amount", f"{field_name}.distribution", kind, "constant, uniform or lognormal for an amount")
            require(0.0 < params[0] < 1.0, f"{field_name}.mean", params[0], "a share in (0, 1)")
            require(params[1] > 0.0, f"{field_name}.concentration", params[1], "a number > 0")
        else:  # lognormal
            require(domain == "amount", f"{field_name}.distribution", kind, "constant, uniform or beta for a share")
            require(params[0] > 0.0, f"{field_name}.median", params[0], "a number > 0")
            require(params[1] >= 0.0, f"{field_name}.sigma", params[1], "a number >= 0")

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` values; exactly one call to ``rng`` whatever the distribution (so the streams stay aligned)."""
        u = rng.random(n)
        kind, params = self.distribution, self.params
        if kind == "constant":
            return np.full(n, params[0])
        if kind == "uniform":
            return params[0] + (params[1] - params[0]) * u
        if kind == "beta":  # inverse CDF of one uniform draw keeps the stream aligned
            from scipy.special import betaincinv

            mean, concentration = params
            values = betaincinv(mean * concentration, (1 - mean) * concentration, u)
            return np.clip(values, np.finfo(np.float32).tiny, 1.0)  # a fraction of exactly 0 is no move
        from scipy.special import ndtri

        return params[0] * np.exp(params[1] * ndtri(u))


@dataclass(frozen=True)
class AgentSettings:
    """How recipients act on recourse and what happens to their label; the ``[agents]`` table of a scenario.

    The defaults are the reference protocol (SaTML 2023): everyone complies (``compliance = 1``), picks one of its
    K counterfactuals at random, moves all the way, and takes the model's prediction there (``outcome =
    "model"``). See the module docstring for each option; the traits ``compliance``, ``move_fraction`` and
    ``budget`` are a number or a table ``{distribution = "beta", mean = 0.6, concentration = 4}``
    (``"constant"``, ``"uniform"`` low/high, ``"beta"`` mean/concentration, ``"lognormal"`` median/sigma).

    - ``outcome``: ``"model"`` (the model's prediction at the new point), ``"truth"`` (drawn from the true
      P(y | x'): the move is a real improvement), ``"unchanged"`` (gaming: the true label does not move);
    - ``truth``: where the true P(y | x) comes from: ``"exact"`` (a synthetic dataset's generative process),
      ``"oracle"`` (a strong classifier fitted once on all rows: semi-synthetic), ``"none"``, or ``"auto"``
      (exact where known, else an oracle if ``outcome = "truth"`` needs one, else none);
    - ``choice``: which of the K counterfactuals an individual implements;
    - ``cost_aversion`` a >= 0: compliance ``pi_i * exp(-a * c_i)`` (0: compliance ignores the cost);
    - ``budget``: unset means no budget; ``over_budget``: ``"refuse"`` or ``"partial"``;
    - ``cost_weights``: ``{feature = weight}`` (unlisted features weigh 1); ``group_cost_weights``:
      ``{group = {feature = weight}}`` overriding them for a group; ``cost_weight_spread``: sigma of a
      log-normal factor per individual and feature (0: none);
    - ``groups``: unset (no groups), ``"random"`` (a random split, ``group_share`` in ``group_a``), a
      categorical attribute of the data (``"SEX"``: one group per one-hot column) or a feature (0/1 feature:
      its two values; otherwise split at ``group_threshold``, unset: the median of the initial data). Group
      membership is a trait fixed at round 0.
    """

    outcome: Outcome = "model"
    truth: TruthSource = "auto"
    choice: Choice = "random"
    compliance: TraitSetting = 1.0
    cost_aversion: float = 0.0
    move_fraction: TraitSetting = 1.0
    budget: TraitSetting | None = None
    over_budget: OverBudget = "refuse"
    cost_weights: Mapping[str, float] = field(default_factory=dict)
    group_cost_weights: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    cost_weight_spread: float = 0.0
    groups: str | None = None
    group_share: float = 0.5
    group_threshold: float | None = None

    def __post_init__(self) -> None:
        check_fields(self, "agents")
        Trait.parse("agents.compliance", self.compliance, "share")
        Trait.parse("agents.move_fraction", self.move_fraction, "fraction")
        if self.budget is not None:
            Trait.parse("agents.budget", self.budget, "amount")
        require(self.cost_aversion >= 0, "agents.cost_aversion", self.cost_aversion, "a number >= 0")
        require(self.cost_weight_spread >= 0, "agents.cost_weight_spread", self.cost_weight_spread, "a number >= 0")
        require(0.0 < self.group_share < 1.0, "agents.group_share", self.group_share, "a share in (0, 1)")
        require(self.outcome != "truth" or self.truth != "none", "agents.truth", self.truth,
                "'auto', 'exact' or 'oracle' with outcome = 'truth' (it draws labels from the truth)")
        _check_weights("agents.cost_weights", self.cost_weights)
        if not isinstance(self.group_cost_weights, Mapping):
            raise ConfigError("agents.group_cost_weights", self.group_cost_weights, "a table {group = {feature = weight}}")
        for group, weights in self.group_cost_weights.items():
            _check_weights(f"agents.group_cost_weights.{group}", weights)
        require(self.groups is not None or not self.group_cost_weights, "agents.group_cost_weights",
                dict(self.group_cost_weights), "empty unless agents.groups is set")

    @property
    def changes_behaviour(self) -> bool:
        """Whether recipients act otherwise than in the reference protocol (compliance, partial moves, budgets,
        the choice among the K counterfactuals, their own cost weights): then the agents' metrics are reported."""
        reference = AgentSettings()
        return any(getattr(self, name) != getattr(reference, name) for name in _BEHAVIOUR)

    def check_data(self, data: Dataset) -> None:
        """The checks that need the data: the group attribute, the features and groups named by cost weights,
        and an exact truth where one is asked for. Raises :class:`ConfigError` naming the field."""
        _, group_names = assign_groups(self, data, np.random.default_rng(0))
        _weight_row("agents.cost_weights", self.cost_weights, data.schema.names)
        for group_name, weights in self.group_cost_weights.items():
            if group_name not in group_names:
                raise ConfigError("agents.group_cost_weights", group_name, f"one of the groups {', '.join(group_names)}")
            _weight_row(f"agents.group_cost_weights.{group_name}", weights, data.schema.names)
        if self.truth == "exact" and data.truth is None:
            raise ConfigError("agents.truth", "exact", f"'oracle' or 'none': dataset {data.name!r} has no known "
                              "generative process (only the synthetic datasets have one)")


def _check_weights(field_name: str, weights: Any) -> None:
    if not isinstance(weights, Mapping):
        raise ConfigError(field_name, weights, "a table {feature = weight}")
    for feature, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
            raise ConfigError(f"{field_name}.{feature}", weight, "a finite number >= 0")


def agent_rng(seed: int) -> np.random.Generator:
    """The agents' own random stream, independent of the simulation's (a spawned child of ``seed``)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_AGENT_STREAM,)))


# ------------------------------------------------------------------------------------------- the people
@dataclass
class Agents:
    """The traits of the n individuals (shared by every system) and the per-round draws.

    ``propensity``, ``move_fraction`` and ``budget`` (n,); ``cost_weights`` (n, d) already divided by the search
    space's scale, so ``|x' - x| @ w`` is the cost; ``group`` (n,) indexes ``group_names`` (all 0 without groups).
    """

    settings: AgentSettings
    propensity: torch.Tensor
    move_fraction: torch.Tensor
    budget: torch.Tensor | None
    cost_weights: torch.Tensor
    group: torch.Tensor
    group_names: tuple[str, ...]
    rng: np.random.Generator

    @classmethod
    def draw(cls, settings: AgentSettings, data: Dataset, scale: torch.Tensor, seed: int) -> Agents:
        """Traits for the individuals of ``data`` (the initial training rows); ``scale`` (d,) the search scale."""
        settings.check_data(data)
        rng = agent_rng(seed)
        n, names = data.n_samples, data.schema.names
        device = scale.device
        group, group_names = assign_groups(settings, data, rng)
        propensity = Trait.parse("agents.compliance", settings.compliance, "share").draw(n, rng)
        fraction = Trait.parse("agents.move_fraction", settings.move_fraction, "fraction").draw(n, rng)
        budget = (Trait.parse("agents.budget", settings.budget, "amount").draw(n, rng)
                  if settings.budget is not None else None)
        everyone = _weight_row("agents.cost_weights", settings.cost_weights, names)
        weights = np.tile(everyone, (n, 1))
        for g, group_name in enumerate(group_names):
            if group_name in settings.group_cost_weights:
                weights[group == g] = _weight_row(f"agents.group_cost_weights.{group_name}",
                                                  settings.group_cost_weights[group_name], names, base=everyone)
        spread = rng.standard_normal((n, len(names)))  # drawn always: the stream does not depend on the option
        weights = weights * np.exp(settings.cost_weight_spread * spread)

        def tensor(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float32, device=device)

        return cls(settings, tensor(propensity), tensor(fraction), None if budget is None else tensor(budget),
                   tensor(weights) / scale.to(device), torch.as_tensor(group, device=device), group_names, rng)

    # ----------------------------------------------------------------------------------- per round
    def round_draws(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Two uniforms per individual for this round: who complies, and the true outcome (see ``outcome``);
        drawn every round whatever the options, so every option sees the same draws."""
        u = torch.as_tensor(self.rng.random((2, n)), dtype=torch.float32, device=device)
        return u[0], u[1]

    def cost(self, factual: torch.Tensor, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Each individual's own cost of moving from ``factual`` (S, B, d) to ``x`` (S, B, [K,] d)."""
        weights = self.cost_weights[rows]  # (S, B, d)
        if x.dim() == factual.dim() + 1:
            return ((x - factual.unsqueeze(2)).abs() * weights.unsqueeze(2)).sum(-1)
        return ((x - factual).abs() * weights).sum(-1)

    def choose(self, copy_costs: torch.Tensor, proba: torch.Tensor) -> torch.Tensor:
        """Which of the K copies each individual implements (S, B) under ``choice`` "cheapest" (the cheapest
        valid copy, the cheapest if none is valid) or "most_confident" (the highest p(y+))."""
        if self.settings.choice == "most_confident":
            return proba.argmax(-1)
        valid = proba >= DECISION_THRESHOLD
        any_valid = valid.any(-1, keepdim=True)
        ranked = torch.where(valid | ~any_valid, copy_costs, torch.full_like(copy_costs, math.inf))
        return ranked.argmin(-1)

    def act(self, rows: torch.Tensor, cost: torch.Tensor, comply_draw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Who acts and how far: ``(acts (S, B) bool, fraction (S, B))`` for recipients ``rows`` whose full move
        would cost ``cost``. Acting needs ``u_i < pi_i exp(-a c_i)`` and, with a budget, ``f_i c_i <= b_i``
        (``"refuse"``) or moves ``min(f_i, b_i / c_i)`` of the way (``"partial"``)."""
        s = self.settings
        probability = self.propensity[rows] * torch.exp(-s.cost_aversion * cost)
        acts = comply_draw[rows] < probability
        fraction = self.move_fraction[rows].clone()
        if self.budget is not None:
            budget = self.budget[rows]
            spent = fraction * cost
            if s.over_budget == "refuse":
                acts = acts & (spent <= budget)
            else:
                fraction = torch.where(spent > budget, budget / cost.clamp_min(1e-12), fraction)
        return acts, fraction


def assign_groups(settings: AgentSettings, data: Dataset, rng: np.random.Generator) -> tuple[np.ndarray, tuple[str, ...]]:
    """Group index per individual and the group names (see :class:`AgentSettings`); one draw of ``rng`` always."""
    u = rng.random(data.n_samples)
    by = settings.groups
    if by is None:
        return np.zeros(data.n_samples, dtype=np.int64), ("all",)
    if by == "random":
        return (u >= settings.group_share).astype(np.int64), RANDOM_GROUPS
    names = data.schema.names
    X = data.X.cpu().numpy()
    for columns in data.schema.categorical_groups:
        column_names = [names[j] for j in columns]
        if all(c.startswith(f"{by}_") for c in column_names):
            return X[:, list(columns)].argmax(1).astype(np.int64), tuple(column_names)
    if by not in names:
        attributes = sorted({names[g[0]].rsplit("_", 1)[0] for g in data.schema.categorical_groups})
        raise ConfigError("agents.groups", by, "'random', a feature (" + ", ".join(names) + ")"
                          + (f" or a categorical attribute ({', '.join(attributes)})" if attributes else ""))
    values = X[:, names.index(by)]
    if set(np.unique(values)) <= {0.0, 1.0}:
        return values.astype(np.int64), (f"{by}=0", f"{by}=1")
    threshold = float(np.median(values)) if settings.group_threshold is None else settings.group_threshold
    above = values >= threshold
    if above.all() or not above.any():
        raise ConfigError("agents.group_threshold", threshold,
                          f"a value inside the range of {by!r} ({values.min():g} to {values.max():g})")
    return above.astype(np.int64), (f"{by}<{threshold:g}", f"{by}>={threshold:g}")


def _weight_row(field_name: str, weights: Mapping[str, float], names: tuple[str, ...],
                base: np.ndarray | None = None) -> np.ndarray:
    row = np.ones(len(names)) if base is None else base.copy()
    for feature, weight in weights.items():
        if feature not in names:
            raise ConfigError(f"{field_name}.{feature}", weight, f"a weight for a feature: {', '.join(names)}")
        row[names.index(feature)] = weight
    return row
