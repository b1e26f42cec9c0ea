"""Objective terms: ``x' = argmin yloss(M(x'), y+) + sum_i lambda_i cost_i(x, x') + sum_j lambda_j extcost_j(x')``.

Each term maps a :class:`SearchBatch` to a per-individual penalty (S, B'), summed over the K copies where
the reference code does so. Terms are frozen dataclasses, hence hashable: the engine evaluates each distinct
term once per iteration for all systems of a call and weights it per system (zero where unused), which is how
systems with different generators share one batched search.

Distances are measured in the standardised search space (CounterfactualExplanations.jl v0.1.5 computes its
penalties on the transformed state). Norms over the "K-stack" are Frobenius norms over all K copies jointly,
as in the reference code (``norm(x - x')`` on a (d, 1, K) array).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from recourse_sim.errors import ConfigError
from recourse_sim.generators.problem import SearchBatch, SearchProblem
from recourse_sim.metrics.conformal import COVERAGE, KAPPA, TEMPERATURE, conformal_quantile, conformal_set_size
from recourse_sim.models.base import LOG_DECISION_THRESHOLD

_EPS = 1e-12


def _stack_norm(diff: torch.Tensor) -> torch.Tensor:
    """Frobenius norm over the K copies and d features: (S, B, K, d) -> (S, B); finite gradient at 0."""
    return (diff.pow(2).sum((-1, -2)) + _EPS).sqrt()


class ObjectiveTerm:
    """Base class: ``prepare`` runs once per search (e.g. to sample reference points), ``__call__`` per step."""

    def prepare(self, problem: SearchProblem) -> Any:
        return None

    def __call__(self, batch: SearchBatch, prepared: Any) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Distance(ObjectiveTerm):
    """Euclidean cost ``||X' - X||`` over the K-stack (generic generator / Wachter et al. 2017 in CE.jl)."""

    def __call__(self, batch: SearchBatch, prepared: Any) -> torch.Tensor:
        return _stack_norm(batch.x_std - batch.factual_std.unsqueeze(2))


@dataclass(frozen=True)
class MADDistance(ObjectiveTerm):
    """Wachter et al. (2017) cost: ``sum_k sum_j |x'_kj - x_j| / MAD_j`` (MAD of the initial data)."""

    def prepare(self, problem: SearchProblem) -> torch.Tensor:
        mad = problem.context.mad
        if mad is None:
            mad = torch.ones(problem.factual.shape[-1], device=problem.factual.device)
        return mad.clamp_min(1e-8)

    def __call__(self, batch: SearchBatch, prepared: torch.Tensor) -> torch.Tensor:
        return ((batch.x_std - batch.factual_std.unsqueeze(2)).abs() / prepared).sum((-1, -2))


@dataclass(frozen=True)
class GravitationalPull(ObjectiveTerm):
    """External cost of the gravitational generator (Altmeyer et al. 2023): ``||X' - c||`` over the K-stack.

    ``c`` is the mean of ``n_neighbours`` = 50 rows drawn with replacement from the system's current
    target-class (y = 1) training data, drawn anew for every individual (reference code v0.1.5; the paper's
    text uses the mean of all of D1).
    """

    n_neighbours: int = 50

    def __post_init__(self) -> None:
        if isinstance(self.n_neighbours, bool) or not isinstance(self.n_neighbours, int) or self.n_neighbours < 1:
            raise ConfigError("n_neighbours", self.n_neighbours, "an integer >= 1 (target-class rows averaged)")

    def prepare(self, problem: SearchProblem) -> torch.Tensor:
        ctx = problem.context
        if ctx.data_X is None or ctx.data_y is None:
            raise ValueError("the gravitational term needs the systems' current data (SearchContext.data_X/y)")
        X = ctx.data_X.index_select(0, problem.systems)  # (S, n, d)
        weights = ctx.data_y.index_select(0, problem.systems).float()  # (S, n): sample target-class rows
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))
        S, B, _ = problem.factual.shape
        draws = torch.multinomial(weights, B * self.n_neighbours, replacement=True, generator=problem.rng)
        neighbours = torch.gather(X, 1, draws.unsqueeze(-1).expand(-1, -1, X.shape[-1]))
        centres = neighbours.view(S, B, self.n_neighbours, -1).mean(2)
        return ctx.standardizer.transform(centres)  # (S, B, d) in the search space

    def __call__(self, batch: SearchBatch, prepared: torch.Tensor) -> torch.Tensor:
        return _stack_norm(batch.x_std - prepared[:, batch.index].unsqueeze(2))


@dataclass(frozen=True)
class ClassifierLoss(ObjectiveTerm):
    """External cost of ClaPROAR (Altmeyer et al. 2023): the model's own loss ``BCE(M(x'), yhat(x'))``.

    Penalising the classifier loss at the counterfactual pushes it away from the decision boundary, where a
    retrained model would move most. Applied only once all K copies of an individual are valid, and averaged
    over the copies (reference code v0.1.5).
    """

    def __call__(self, batch: SearchBatch, prepared: Any) -> torch.Tensor:
        log_p = batch.log_p
        predicted = (log_p.detach() >= LOG_DECISION_THRESHOLD).float()
        log_not_p = torch.log1p(-log_p.exp().clamp(max=1 - 1e-6))
        bce = -(predicted * log_p + (1 - predicted) * log_not_p)
        return bce.mean(-1) * batch.all_valid.float()


@dataclass(frozen=True)
class L1Distance(ObjectiveTerm):
    """L1 cost ``sum_k sum_j |x'_kj - x_j|`` over the K-stack (CE.jl ``distance_l1``; ECCCo, CLUE)."""

    def __call__(self, batch: SearchBatch, prepared: Any) -> torch.Tensor:
        return (batch.x_std - batch.factual_std.unsqueeze(2)).abs().sum((-1, -2))


@dataclass(frozen=True)
class DPPDiversity(ObjectiveTerm):
    """DiCE's diversity term (Mothilal et al. 2020): ``-det(Kern)`` over an individual's K copies.

    ``Kern_ij = 1 / (1 + ||x'_i - x'_j||)`` in the search space. The reference code adds ``1e-5 * N(0, 1)``
    noise to the diagonal to keep the determinant away from singular matrices; this term adds a deterministic
    ``jitter`` = 1e-5 to the diagonal instead, so results are reproducible (a deliberate deviation). Larger
    determinants mean more mutually distant copies; with K = 1 the term is constant.
    """

    jitter: float = 1e-5

    def __call__(self, batch: SearchBatch, prepared: Any) -> torch.Tensor:
        x = batch.x_std  # (S, B, K, d)
        K = x.shape[-2]
        dist = ((x.unsqueeze(-2) - x.unsqueeze(-3)).pow(2).sum(-1) + _EPS).sqrt()  # (S, B, K, K)
        kern = 1.0 / (1.0 + dist) + self.jitter * torch.eye(K, device=x.device, dtype=x.dtype)
        return -torch.linalg.det(kern)


def target_logit(batch: SearchBatch) -> torch.Tensor:
    """The logit of y+ = 1 at the candidates (S, B, K): ECCCo's energy is ``E(x' | y+) = -logit_{y+}(x')``.

    A model with one logit per class (``class_logits_stacked``, e.g. the JEM) gives its class-1 logit f_1, as in
    ECCCo, whose models all have one output per class; its log-odds f_1 - f_0 would keep growing where the model
    has no data (f_0 falls there too), and the search would overshoot far past the target class (measured on the
    JEM on circles: implausibility ~29 with the log-odds, 0.55-0.62 with f_1). A model with one logit (the
    package's MLPs and ensembles; ``logits_stacked``) gives that logit, for the ensembles the mean member logit,
    as ECCCo does for ensembles. A bare scorer without either (anything with ``log_proba_stacked``) gives the
    log-odds of p.
    """
    model = batch.problem.model
    S, B, K, d = batch.x.shape
    x = batch.x.reshape(S, B * K, d)
    if hasattr(model, "class_logits_stacked"):
        return model.class_logits_stacked(x, batch.systems)[..., 1].reshape(S, B, K)
    if hasattr(model, "logits_stacked"):
        return model.logits_stacked(x, batch.systems).view(S, B, K)
    log_p = batch.log_p
    return log_p - torch.log1p(-log_p.exp().clamp(max=1 - 1e-6))


@dataclass(frozen=True)
class Energy(ObjectiveTerm):
    """ECCCo's energy term (Altmeyer et al., AAAI 2024): ``E(x' | y+) = -logit_y+(x')``, mean over the copies.

    Without the paper's ridge ``r ||E||^2`` (r = 0 is its setting for the synthetic and most tabular data; with
    steep ReLU logits and Descent(0.05) the ridge gradient ``2 r E grad E`` diverges) and without the energy
    decay schedule (the experiments' (0.1, 5) setting barely decays). On ReLU networks the logit grows without
    bound along rays, so unless the schema bounds the features the term keeps pushing past the data
    ("overshoot", a limitation the authors state; their experiments clamp to the data range: in a scenario,
    ``[data] bounds = "data_range"``).
    """

    def __call__(self, batch: SearchBatch, prepared: Any) -> torch.Tensor:
        return -target_logit(batch).mean(-1)


@dataclass(frozen=True)
class ConformalSetSize(ObjectiveTerm):
    """ECCCo's conformal set-size penalty ``Omega(x')`` (see :func:`conformal_set_size`), mean over the copies.

    For the binary model the class probabilities are ``[1 - p, p]``. ``q_hat`` is computed in ``prepare`` per
    system at ``coverage`` = 0.95 from the calibration scores ``1 - p_{y_i}(x_i)`` over the system's *current*
    data (``SearchContext.data_X``/``data_y``), all of it: the simulation trains on all of it too, so there is
    no held-out share to use, and the resulting q_hat is an in-sample (optimistic) estimate — a deviation from
    ECCCo's 50/50 split. Temperature T = 0.1 and kappa = 1 (ECCCo defaults); the penalty applies to a copy once
    its p(y+) >= 0.5 (ECCCo's gating).
    """

    coverage: float = COVERAGE
    temperature: float = TEMPERATURE
    kappa: float = KAPPA

    def __post_init__(self) -> None:
        if not 0.0 < self.coverage < 1.0:
            raise ConfigError("coverage", self.coverage, "a share in (0, 1) (the conformal coverage, e.g. 0.95)")
        if not 0.0 < self.temperature < math.inf:
            raise ConfigError("temperature", self.temperature, "a finite number > 0 (the set-size smoothing)")
        if not 0.0 <= self.kappa < math.inf:
            raise ConfigError("kappa", self.kappa, "a finite number >= 0")

    def prepare(self, problem: SearchProblem) -> torch.Tensor:
        ctx = problem.context
        if ctx.data_X is None or ctx.data_y is None:
            raise ValueError("the conformal set-size term needs calibration data (SearchContext.data_X/y)")
        X = ctx.data_X.index_select(0, problem.systems)
        y = ctx.data_y.index_select(0, problem.systems)
        with torch.no_grad():
            p = problem.model.log_proba_stacked(X, problem.systems).exp()
        scores = torch.where(y > 0.5, 1.0 - p, p)  # 1 - p_{y_i}(x_i)
        return conformal_quantile(scores, self.coverage)  # (S,)

    def __call__(self, batch: SearchBatch, prepared: torch.Tensor) -> torch.Tensor:
        p = batch.log_p.exp()
        proba = torch.stack([1.0 - p, p], dim=-1)
        omega = conformal_set_size(proba, prepared.view(-1, 1, 1), self.temperature, self.kappa)
        return (omega * (batch.log_p.detach() >= LOG_DECISION_THRESHOLD)).mean(-1)
