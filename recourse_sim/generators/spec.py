"""A generator is a declarative objective: yloss + weighted cost terms + weighted external-cost terms,
plus the decision threshold, step rule and convergence rule. The engine does the rest."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from recourse_sim.errors import ConfigError
from recourse_sim.generators.terms import ObjectiveTerm
from recourse_sim.models.base import DECISION_THRESHOLD

Convergence = Literal["threshold", "threshold_and_small_step", "threshold_and_small_gradient"]
CONVERGENCE_RULES = ("threshold", "threshold_and_small_step", "threshold_and_small_gradient")
YLoss = Literal["bce", "entropy"]
YLOSSES = ("bce", "entropy")
CONTROL_STRATEGY = "none"  # the no-recourse control (generators/control.py): recipients do not move


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything that defines a counterfactual generator.

    - ``costs`` / ``extcosts``: ``(lambda, term)`` pairs for the individual cost and the external cost of recourse
      (Altmeyer et al. 2023, "yloss + lambda1 cost + lambda2 extcost");
    - ``threshold``: the decision threshold gamma a counterfactual's p(y+) must reach (the "conservative"
      mitigation raises it to 0.9);
    - ``convergence``: ``"threshold"`` stops an individual once all K copies reach gamma;
      ``"threshold_and_small_step"`` once all copies are valid (p >= 0.5) and every |step| < ``tolerance``
      (gravitational and ClaPROAR, which keep going past the boundary); ``"threshold_and_small_gradient"``
      once all copies reach gamma and every |mutability-masked objective gradient| < ``tolerance`` (ECCCo,
      CounterfactualExplanations.jl's ``:generator_conditions``);
    - ``max_changes``: the greedy strategy's cap n on how often a copy may change one feature, raised by
      n / passes once every mutable feature is used up (Schut et al. 2021); ``None`` means
      ``round(1 / step_size)`` (CounterfactualExplanations.jl), 10 for 0.1;
    - ``yloss``: ``"bce"`` (cross-entropy toward y+ = 1) or ``"entropy"`` (predictive entropy, CLUE);
    - ``step_size`` 0.01 and ``max_steps`` 100: plain gradient descent, ``Descent(0.01)`` with T = 100 in the
      reference code;
    - ``strategy``: how the state moves: ``"gradient"`` descent in the standardised feature space,
      ``"greedy"`` single-feature moves (Schut et al. 2021), ``"latent"`` descent in a VAE's latent space
      (REVISE, CLUE); ``"none"`` the no-recourse control (recipients do not move, see ``control.py``).
    """

    name: str
    costs: tuple[tuple[float, ObjectiveTerm], ...] = ()
    extcosts: tuple[tuple[float, ObjectiveTerm], ...] = ()
    threshold: float = DECISION_THRESHOLD
    convergence: Convergence = "threshold"
    tolerance: float = 1e-3
    step_size: float = 0.01
    max_steps: int = 100
    strategy: str = "gradient"
    yloss: YLoss = "bce"
    max_changes: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"generator[{self.name}].threshold", self.threshold, "a probability in (0, 1)")
        for label, pairs in (("costs", self.costs), ("extcosts", self.extcosts)):
            for weight, term in pairs:
                if not weight >= 0:
                    raise ConfigError(f"generator[{self.name}].{label} weight", weight, "a number >= 0")
                if not isinstance(term, ObjectiveTerm):
                    raise ConfigError(f"generator[{self.name}].{label} term", term, "an ObjectiveTerm")
        if self.convergence not in CONVERGENCE_RULES:
            raise ConfigError(f"generator[{self.name}].convergence", self.convergence, " or ".join(CONVERGENCE_RULES))
        if self.yloss not in YLOSSES:
            raise ConfigError(f"generator[{self.name}].yloss", self.yloss, " or ".join(YLOSSES))
        if self.max_changes is not None and (not isinstance(self.max_changes, int) or self.max_changes < 1):
            raise ConfigError(f"generator[{self.name}].max_changes", self.max_changes, "an integer >= 1 or None")
        if not self.step_size > 0:
            raise ConfigError(f"generator[{self.name}].step_size", self.step_size, "a number > 0")
        if not isinstance(self.max_steps, int) or self.max_steps < 0:
            raise ConfigError(f"generator[{self.name}].max_steps", self.max_steps, "an integer >= 0")
        if not self.tolerance > 0:
            raise ConfigError(f"generator[{self.name}].tolerance", self.tolerance, "a number > 0")

    @property
    def moves(self) -> bool:
        """Whether recipients act on this generator's counterfactuals (False only for the no-recourse control)."""
        return self.strategy != CONTROL_STRATEGY

    @property
    def terms(self) -> tuple[tuple[float, ObjectiveTerm], ...]:
        return self.costs + self.extcosts

    def replace(self, **changes) -> GeneratorSpec:
        return dataclasses.replace(self, **changes)
