"""The Counterfactual Training objective (Altmeyer, Buszydlik, van Deursen, Liem, SaTML 2026, Eq. ``eq-obj``):

    lambda_clf yloss(M(x), y) + lambda_div div(x+, x'_CE, y+) + lambda_adv advloss(M(x'_AE), y_AE)
    + lambda_reg ridge(x+, x'_CE, y+)

with the energy ``E(x, y+) = -M(x)[y+]`` (the logit of the target class), ``div = E(x+) - E(x'_CE)`` and
``ridge = E(x+)^2 + E(x'_CE)^2`` averaged over the batch's counterfactual tuples (CounterfactualTraining.jl
``src/loss.jl``, ``src/objectives.jl::FullObjective``), ``yloss`` and ``advloss`` the logit cross-entropy.

Binary classifiers here have one logit ``f``, the log-odds of y = 1; the logit of class 0 is taken as ``-f`` (the
log-odds of y = 0), so ``E(x, 1) = -f(x)`` and ``E(x, 0) = f(x)``: ``E(x, y+) = -s f(x)`` with ``s = 2 y+ - 1``.

Each ensemble member is trained on its own logit (a deep ensemble trains its members independently; CT keeps
that): every term is computed per member and the loss is summed over members, which gives each member the
gradient of its own objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Objective = Literal["full", "cd", "ar", "baseline"]
#: ``"full"``: every term; the ablations of the CT paper: ``"cd"`` (contrastive divergence, no adversarial term:
#: ``EnergyDifferentialObjective``), ``"ar"`` (adversarial robustness, no div/ridge: ``AdversarialObjective``),
#: ``"baseline"`` (cross-entropy only: ``VanillaObjective``, the BL model).
OBJECTIVES: tuple[str, ...] = ("full", "cd", "ar", "baseline")


@dataclass(frozen=True)
class Weights:
    """The lambda of each term after the objective's ablation (a dropped term weighs 0)."""

    clf: float
    div: float
    adv: float
    reg: float

    @classmethod
    def of(cls, objective: str, clf: float, div: float, adv: float, reg: float) -> Weights:
        keeps_energy = objective in ("full", "cd")
        keeps_adversarial = objective in ("full", "ar")
        return cls(clf, div if keeps_energy else 0.0, adv if keeps_adversarial else 0.0,
                   reg if keeps_energy else 0.0)

    @property
    def needs_counterfactuals(self) -> bool:
        return self.div > 0 or self.adv > 0 or self.reg > 0


@dataclass(frozen=True)
class Terms:
    """The four terms per system and member, each (S, M) (zero where a batch has no counterfactual tuples)."""

    yloss: torch.Tensor
    div: torch.Tensor
    adv: torch.Tensor
    ridge: torch.Tensor

    def loss(self, weights: Weights) -> torch.Tensor:
        """The weighted objective per system (S,), summed over members."""
        total = weights.clf * self.yloss
        for weight, term in ((weights.div, self.div), (weights.adv, self.adv), (weights.reg, self.ridge)):
            if weight:  # a dropped term adds nothing, not even a NaN from an empty batch
                total = total + weight * term
        return total.sum(1)


def energy(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``E(x, y+) = -s f(x)``, ``s = 2 y+ - 1``: logits (S, M, N) and targets (S, N) -> (S, M, N)."""
    return -(2.0 * target.unsqueeze(1) - 1.0) * logit


def terms(f_x: torch.Tensor, y: torch.Tensor, f_plus: torch.Tensor | None = None, f_ce: torch.Tensor | None = None,
          f_ae: torch.Tensor | None = None, y_ae: torch.Tensor | None = None,
          target: torch.Tensor | None = None) -> Terms:
    """The CT terms from member logits (S, M, N) at the batch ``x`` (labels ``y`` (S, N)) and at the tuples'
    ``x+``, ``x'_CE``, ``x'_AE`` (labels ``y_AE``, targets ``y+``, each (S, N')); no tuples: div = adv = ridge = 0."""
    yloss = F.binary_cross_entropy_with_logits(f_x, y.unsqueeze(1).expand_as(f_x), reduction="none").mean(-1)
    if f_plus is None or f_plus.shape[-1] == 0:
        zero = torch.zeros_like(yloss)
        return Terms(yloss, zero, zero, zero)
    e_plus, e_ce = energy(f_plus, target), energy(f_ce, target)
    div = (e_plus - e_ce).mean(-1)
    ridge = (e_plus.square() + e_ce.square()).mean(-1)
    adv = F.binary_cross_entropy_with_logits(f_ae, y_ae.unsqueeze(1).expand_as(f_ae), reduction="none").mean(-1)
    return Terms(yloss, div, adv, ridge)
