"""One epoch's counterfactual tuples ``(x+, x'_CE, x'_AE, y_AE, y+)`` for Counterfactual Training, for every
system of a stack in one batched engine call (CounterfactualTraining.jl ``src/counterfactuals.jl::generate!``).

Per system: ``n_CE`` factuals are drawn without replacement from its training data; each gets the target
``y+ != yhat(x)`` (in the binary case: the class the model does not predict, see :class:`TargetScorer`); the
ECCo generator searches from the factual; the search yields

- the *mature* counterfactual ``x'_CE`` where it reached the threshold tau within T steps, else ``x'_CE := x+``
  (so div = 0 for that tuple: no penalty for immature counterfactuals; its ridge term still counts);
- the *nascent adversarial example* ``x'_AE``: the last iterate within ``epsilon`` of the factual in L-infinity
  (``t_eps = max{t : ||x'_t - x_0||_inf <= eps}``, the ``get_last_valid_ae`` callback), seen through the engine's
  ``on_step`` hook; labelled with the factual's TRUE label ``y_AE``;
- ``x+``: a random training row of class ``y+``, whose protected features are then overwritten
  (:func:`protect_immutable`).

Distances (epsilon) are measured in the search space: features standardised on the initial data, the space the
engine searches and measures costs in (CE.jl searches the transformed data too); in raw feature units epsilon = 0.3
would mean nothing across datasets with incomes and ages. With the reference's step (0.25) the first step often
leaves the epsilon-ball already: on the default scenario's data, every x'_AE of a conventionally trained MLP was the
factual itself (advloss is then cross-entropy at the factuals), 64 % for a CT-trained one (smaller logits, shorter
steps).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from recourse_sim.generators.catalogue import eccco
from recourse_sim.generators.constraints import FeatureConstraints
from recourse_sim.generators.engine import search
from recourse_sim.generators.problem import SearchContext, SearchSettings, StepHook, StepRecord
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.models.base import DECISION_THRESHOLD
from recourse_sim.training.parameters import TrainableClassifier, ensemble_log_proba

#: One counterfactual per factual, started exactly at the factual (CE.jl ``initialization=:identity``).
SEARCH_SETTINGS = SearchSettings(n_counterfactuals=1, init_noise=0.0)


def ecco_spec(threshold: float, max_steps: int, step_size: float, lambda_cost: float,
              lambda_energy: float) -> GeneratorSpec:
    """The generator inside CT: ECCo, i.e. the package's ECCCo without its conformal set-size term
    (``lambda_set_size = 0``), stopping once p(y+) reaches tau (``DecisionThresholdConvergence``)."""
    spec = eccco(lambda_cost=lambda_cost, lambda_energy=lambda_energy, lambda_set_size=0.0, step_size=step_size,
                 threshold=threshold, max_steps=max_steps)
    return spec.replace(name="ecco", convergence="threshold")


@dataclass(frozen=True)
class Tuples:
    """An epoch's counterfactual tuples, each (S, n_CE, ...), in the random order the factuals were drawn.

    ``rows``: the factuals' rows in the training data; ``target``: y+; ``converged``: the search reached tau (where
    not, ``x_ce`` is ``x_plus``)."""

    rows: torch.Tensor
    factual: torch.Tensor
    target: torch.Tensor
    x_plus: torch.Tensor
    x_ce: torch.Tensor
    x_ae: torch.Tensor
    y_ae: torch.Tensor
    converged: torch.Tensor

    def __getitem__(self, part: slice) -> Tuples:
        return Tuples(*(getattr(self, name)[:, part] for name in self.__dataclass_fields__))

    @property
    def size(self) -> int:
        return self.rows.shape[1]


class TargetScorer:
    """The model seen by the engine as 2S systems: system ``s`` searches toward y = 1, system ``S + s`` toward y = 0.

    The engine searches toward y+ = 1 (its yloss is ``-log p(y=1)``, its energy the logit of y = 1). CT wants
    ``y+ != yhat(x)``, so a factual the model predicts positive needs a search toward y = 0: the second half of the
    stack sees the member logits negated, i.e. p(y=0) and the log-odds of y = 0, computed from the logits without
    cancellation. Which half a system is in is a tensor operation on ``systems``: no host synchronisation per step.
    """

    def __init__(self, view: TrainableClassifier, n_systems: int, device: torch.device) -> None:
        self.view, self.S = view, n_systems
        self.n_systems = 2 * n_systems
        self._all = torch.arange(self.n_systems, device=device)

    def _signed(self, X: torch.Tensor, systems: torch.Tensor | None) -> torch.Tensor:
        systems = self._all if systems is None else systems
        sign = 1.0 - 2.0 * (systems >= self.S).to(X.dtype)
        return self.view.member_logits(X, systems % self.S) * sign.view(-1, 1, 1)

    def log_proba_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        return ensemble_log_proba(self._signed(X, systems))

    def logits_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        return self._signed(X, systems).mean(1)


class NascentAdversarial:
    """``on_step`` hook: keeps, per individual, the last iterate within ``epsilon`` (L-infinity, search space) of
    its factual. Starts at the factual itself (what the reference returns when no step qualifies)."""

    def __init__(self, factual: torch.Tensor, context: SearchContext, epsilon: float) -> None:
        self.standardize = context.standardizer.transform
        self.factual_std = self.standardize(factual)
        self.epsilon = epsilon
        self.example = factual.clone()  # (S, B, d)

    def __call__(self, record: StepRecord) -> None:
        x = record.x[:, :, 0]  # one copy per individual
        index = record.index
        distance = (self.standardize(x) - self.factual_std[:, index]).abs().amax(-1)
        within = (distance <= self.epsilon).unsqueeze(-1)
        self.example[:, index] = torch.where(within, x, self.example[:, index])


def protect_immutable(x_plus: torch.Tensor, x_cf: torch.Tensor, constraints: FeatureConstraints) -> torch.Tensor:
    """CT's protection of the positive samples (``protect_immutable!``): per feature, an immutable ``x+[d]`` takes
    ``x'[d]``; an increase-only one takes ``x'[d]`` where ``x+[d] < x'[d]``, a decrease-only one where
    ``x+[d] > x'[d]``; others keep ``x+[d]``. So the contrastive term never asks the model to find the target
    class along a direction an individual cannot move (a point-mass prior on the protected features)."""
    x_plus = torch.where(constraints.increase_only, torch.maximum(x_plus, x_cf), x_plus)
    x_plus = torch.where(constraints.decrease_only, torch.minimum(x_plus, x_cf), x_plus)
    return torch.where(constraints.immutable, x_cf, x_plus)


def sample_tuples(view: TrainableClassifier, X: torch.Tensor, y: torch.Tensor, n_counterfactuals: int,
                  spec: GeneratorSpec, context: SearchContext, epsilon: float, rng: torch.Generator,
                  observe: StepHook | None = None) -> Tuples:
    """One epoch's tuples for the stack's training data ``X`` (S, n, d), ``y`` (S, n).

    ``rng`` (CPU) draws the factuals, the positive samples and the search's seed, so the tuples do not depend on
    the device. ``observe`` also sees every search step (after the adversarial-example hook), in the engine's
    layout: systems ``0..S-1`` search toward y = 1, ``S..2S-1`` toward y = 0 (see :func:`_by_direction`).
    """
    S, n, d = X.shape
    device = X.device
    rows = torch.rand(S, n, generator=rng).argsort(1)[:, :n_counterfactuals].to(device)
    factual = torch.gather(X, 1, rows.unsqueeze(-1).expand(-1, -1, d))
    with torch.no_grad():
        p = ensemble_log_proba(view.member_logits(factual)).exp()
    target = (p < DECISION_THRESHOLD).to(X.dtype)  # y+ = the class the model does not predict

    slots, valid = _by_direction(target)
    B = slots.shape[1]
    start = torch.gather(factual.repeat(2, 1, 1), 1, slots.unsqueeze(-1).expand(-1, -1, d))
    adversarial = NascentAdversarial(start, context, epsilon)
    hook = adversarial if observe is None else _both(adversarial, observe)
    search_rng = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=rng)))
    result = search(TargetScorer(view, S, device), start, [spec] * (2 * S), context, settings=SEARCH_SETTINGS,
                    rng=search_rng, on_step=hook)

    # Back to the drawn order: slot b of half h holds the factual drawn at position slots[h, b] (if valid).
    destination = torch.where(valid, slots, n_counterfactuals)  # invalid slots write to a dropped column

    def drawn_order(values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros(S, n_counterfactuals + 1, *values.shape[2:])
        for half in (slice(0, S), slice(S, 2 * S)):
            index = destination[half].view(S, B, *(1,) * (values.dim() - 2)).expand_as(values[half])
            out.scatter_(1, index, values[half])
        return out[:, :n_counterfactuals]

    counterfactual = drawn_order(result.counterfactuals[:, :, 0])
    converged = drawn_order(result.converged)
    x_ae = drawn_order(adversarial.example)
    x_plus = _positive_samples(X, y, target, rng)
    x_ce = torch.where(converged.unsqueeze(-1), counterfactual, x_plus)
    x_plus = protect_immutable(x_plus, x_ce, context.constraints)
    return Tuples(rows=rows, factual=factual, target=target, x_plus=x_plus, x_ce=x_ce, x_ae=x_ae,
                  y_ae=torch.gather(y, 1, rows), converged=converged)


def _by_direction(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's layout of the drawn factuals: ``slots`` (2S, B) are positions in the draw, the first S rows
    those with y+ = 1, the last S those with y+ = 0, each in drawn order and padded to the longest (``valid`` marks
    the real ones; a padding slot repeats a factual and its result is dropped). B is at most n_CE, about n_CE / 2
    when predictions are balanced: half the work of searching every factual in both directions."""
    slots, counts = [], []
    for direction in (1.0, 0.0):
        wanted = target == direction
        slots.append(torch.argsort((~wanted).to(torch.int8), dim=1, stable=True))
        counts.append(wanted.sum(1))
    counts = torch.cat(counts)
    B = max(int(counts.max()), 1)
    slots = torch.cat([s[:, :B] for s in slots])
    valid = torch.arange(B, device=target.device) < counts.unsqueeze(1)
    return slots, valid


def _positive_samples(X: torch.Tensor, y: torch.Tensor, target: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """One random training row of class y+ per tuple, drawn with replacement from the system's own data (a system
    whose data lack a class draws from all its rows there, rather than fail)."""
    d = X.shape[-1]
    draws = {}
    for label in (1.0, 0.0):
        weights = (y == label).float().cpu()
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))
        draws[label] = torch.multinomial(weights, target.shape[1], replacement=True, generator=rng).to(X.device)
    index = torch.where(target == 1.0, draws[1.0], draws[0.0])
    return torch.gather(X, 1, index.unsqueeze(-1).expand(-1, -1, d))


def _both(first: StepHook, second: StepHook) -> StepHook:
    def hook(record: StepRecord) -> None:
        first(record)
        second(record)

    return hook


def tuple_chunks(n_tuples: int, n_batches: int) -> list[slice]:
    """The tuples of each mini-batch: ``n_tuples`` split as evenly as possible over ``n_batches`` (in order)."""
    bounds = [math.floor(b * n_tuples / n_batches) for b in range(n_batches + 1)]
    return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]
