"""The one batched counterfactual search engine.

It moves a (S, B, K, d) state — S systems x B individuals x K copies x d features — with per-individual
convergence masks, and enforces the feature constraints after every step for every generator. Systems with
different generators share one call: every distinct objective term is evaluated once per iteration and
weighted per system. Individuals that have converged in every system are compacted out of the working
batch (checked every ``check_every`` steps to avoid a host-device sync per step), so early finishers stop
costing.

Strategies share one loop (:func:`descend`) and differ only in their :class:`SearchSpace`: what the state is
(standardised features, or a VAE's latent code), how it becomes feasible candidates (always through
``FeatureConstraints.project``) and how a gradient becomes a step (gradient descent, or greedy's single-feature
moves). ``"gradient"`` lives here; ``"greedy"`` and ``"latent"`` in their own modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from recourse_sim.errors import ConfigError
from recourse_sim.generators.problem import SearchBatch, SearchContext, SearchProblem, SearchResult, SearchSettings, StackedScorer
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.generators.terms import ObjectiveTerm
from recourse_sim.device import flush_denormals

_LOG_HALF = math.log(0.5)

Strategy = Callable[[SearchProblem, Sequence[GeneratorSpec]], SearchResult]
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    def add(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return add


@flush_denormals()
def search(
    model: StackedScorer,
    factual: torch.Tensor,
    generators: Sequence[GeneratorSpec],
    context: SearchContext,
    *,
    systems: torch.Tensor | None = None,
    settings: SearchSettings = SearchSettings(),
    generator: torch.Generator | None = None,
) -> SearchResult:
    """Counterfactuals for ``factual`` (S, B, d): system ``s`` uses ``generators[s]`` and model system ``systems[s]``.

    Systems are grouped by strategy (gradient, greedy, latent, ...) and each group runs as one batched call.
    """
    S, B, d = factual.shape
    if len(generators) != S:
        raise ConfigError("generators", len(generators), f"one generator per system ({S})")
    device = factual.device
    systems = torch.arange(S, device=device) if systems is None else systems.to(device)
    generator = generator or torch.Generator(device=device)
    K = settings.n_counterfactuals
    result = SearchResult(
        counterfactuals=torch.empty(S, B, K, d, device=device),
        proba=torch.empty(S, B, K, device=device),
        converged=torch.zeros(S, B, dtype=torch.bool, device=device),
        steps=torch.zeros(S, B, dtype=torch.long, device=device),
    )
    for strategy_name in dict.fromkeys(g.strategy for g in generators):
        if strategy_name not in STRATEGIES:
            raise ConfigError("generator.strategy", strategy_name, f"one of {', '.join(sorted(STRATEGIES))}")
        rows = torch.tensor([i for i, g in enumerate(generators) if g.strategy == strategy_name], device=device)
        problem = SearchProblem(
            model=model, factual=factual[rows], systems=systems[rows], context=context,
            settings=settings, generator=generator,
        )
        part = STRATEGIES[strategy_name](problem, [generators[i] for i in rows.tolist()])
        result.counterfactuals[rows] = part.counterfactuals
        result.proba[rows] = part.proba
        result.converged[rows] = part.converged
        result.steps[rows] = part.steps
    return result


# --------------------------------------------------------------------------------------------- helpers
def per_system(values: Sequence[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)


def pooled_terms(generators: Sequence[GeneratorSpec], device: torch.device) -> list[tuple[ObjectiveTerm, torch.Tensor]]:
    """Distinct terms across the systems' generators, each with its per-system weight vector (S,)."""
    weights: dict[ObjectiveTerm, list[float]] = {}
    for s, gen in enumerate(generators):
        for weight, term in gen.terms:
            weights.setdefault(term, [0.0] * len(generators))[s] += weight
    return [(term, per_system(w, device)) for term, w in weights.items() if any(w)]


def initial_state(problem: SearchProblem) -> torch.Tensor:
    """K copies per individual at ``x + init_noise * N(0, I)`` in the search space, projected onto constraints."""
    S, B, K, d = problem.shape
    start = problem.factual_std.unsqueeze(2).expand(S, B, K, d)
    noise = torch.randn(start.shape, generator=problem.generator, device=start.device)
    return project_state(problem, start + problem.settings.init_noise * noise, slice(None))


def decode(problem: SearchProblem, state: torch.Tensor, index, straight_through: bool = False) -> torch.Tensor:
    """Search-space state (S, B', K, d) -> feasible feature-space candidates."""
    x = problem.context.standardizer.inverse_transform(state)
    return problem.context.constraints.project(x, problem.factual[:, index].unsqueeze(2), straight_through)


def project_state(problem: SearchProblem, state: torch.Tensor, index) -> torch.Tensor:
    return problem.context.standardizer.transform(decode(problem, state, index))


def score(problem: SearchProblem, x: torch.Tensor) -> torch.Tensor:
    """log p(y=1) of candidates (S, B', K, d) -> (S, B', K)."""
    S, B, K, d = x.shape
    return problem.model.log_proba_stacked(x.reshape(S, B * K, d), problem.systems).view(S, B, K)


def yloss(log_p: torch.Tensor, entropy: torch.Tensor | None = None) -> torch.Tensor:
    """Per-individual yloss (S, B') from log p(y=1) (S, B', K), averaged over the K copies.

    ``"bce"`` (default): the binary cross-entropy toward y+ = 1, ``-log p``. ``"entropy"`` where the boolean
    ``entropy`` (S, 1) is set: the predictive entropy ``-p log p - (1-p) log(1-p)`` (CLUE, Antoran et al. 2021).
    """
    bce = -log_p.mean(-1)
    if entropy is None or not bool(entropy.any()):
        return bce
    p = log_p.exp()
    log_q = torch.log1p(-p.clamp(max=1.0 - 1e-6))  # finite everywhere, so torch.where has clean gradients
    ent = -(p * log_p + (1.0 - p) * log_q).mean(-1)
    return torch.where(entropy, ent, bce)


def finish(problem: SearchProblem, space: SearchSpace, state: torch.Tensor, converged: torch.Tensor, steps: torch.Tensor) -> SearchResult:
    with torch.no_grad():
        x = space.candidates(state, slice(None), straight_through=False)
        proba = score(problem, x).exp()
    return SearchResult(counterfactuals=x, proba=proba, converged=converged, steps=steps)


# ------------------------------------------------------------------------------------- search spaces
class SearchSpace:
    """How a strategy's state becomes candidates and how it moves; :func:`descend` does everything else.

    The state has shape (S, B, K, ...) and is indexed along the individual axis by ``index`` (the active
    columns of the working batch). ``candidates`` must return *feasible* feature-space points (S, B', K, d):
    every space runs them through ``FeatureConstraints.project``, so constraints hold for every strategy.
    """

    def __init__(self, problem: SearchProblem, generators: Sequence[GeneratorSpec]) -> None:
        self.problem = problem
        self.generators = generators

    def initial(self) -> torch.Tensor:
        raise NotImplementedError

    def candidates(self, work: torch.Tensor, index, straight_through: bool) -> torch.Tensor:
        raise NotImplementedError

    def gradient_mask(self) -> torch.Tensor | float:
        """Multiplier on the objective gradient before the convergence test (mutability in feature space)."""
        return 1.0

    def step(self, grad: torch.Tensor, work: torch.Tensor, index) -> torch.Tensor:
        """The proposed change of the state given the objective gradient."""
        raise NotImplementedError

    def move(self, work: torch.Tensor, delta: torch.Tensor, active: torch.Tensor, index) -> torch.Tensor:
        """The next state: ``work + delta`` for active individuals (S, B'), unchanged for the others."""
        return work + delta * active.view(*active.shape, *(1,) * (work.ndim - 2))


class FeatureSpace(SearchSpace):
    """Plain gradient descent in the standardised feature space, projected onto the constraints every step.

    The step is ``-step_size * K * grad`` (the reference code's rescale; ``rescale_step_by_k=False`` drops it)
    with NaN steps zeroed as in the reference code; immutable features get no step.
    """

    def __init__(self, problem: SearchProblem, generators: Sequence[GeneratorSpec]) -> None:
        super().__init__(problem, generators)
        K = problem.settings.n_counterfactuals
        scale = K if problem.settings.rescale_step_by_k else 1
        self.step_size = per_system([g.step_size * scale for g in generators], problem.factual.device).view(-1, 1, 1, 1)
        self.step_mask = problem.context.constraints.step_mask()

    def initial(self) -> torch.Tensor:
        return initial_state(self.problem)

    def candidates(self, work: torch.Tensor, index, straight_through: bool) -> torch.Tensor:
        return decode(self.problem, work, index, straight_through)

    def gradient_mask(self) -> torch.Tensor:
        return self.step_mask

    def step(self, grad: torch.Tensor, work: torch.Tensor, index) -> torch.Tensor:
        return torch.nan_to_num(-self.step_size * grad, nan=0.0) * self.step_mask

    def move(self, work: torch.Tensor, delta: torch.Tensor, active: torch.Tensor, index) -> torch.Tensor:
        mask = active.view(*active.shape, 1, 1)
        moved = project_state(self.problem, work + delta * mask, index)
        return torch.where(mask, moved, work)


# ------------------------------------------------------------------------------------------ the loop
def descend(problem: SearchProblem, generators: Sequence[GeneratorSpec], space: SearchSpace) -> SearchResult:
    """The iteration shared by every strategy: score candidates, evaluate yloss + weighted terms, take the
    space's step, test convergence per individual, and compact finished individuals out of the batch.

    Convergence rules (per system, see :class:`GeneratorSpec`): ``"threshold"`` — all K copies reach gamma;
    ``"threshold_and_small_step"`` — all copies valid (p >= 0.5) and every |step| < tolerance;
    ``"threshold_and_small_gradient"`` — all copies reach gamma and every |mutability-masked objective
    gradient| < tolerance (ECCCo). An individual stops moving once converged or at its system's cap.
    """
    S, B, K, _ = problem.shape
    device = problem.factual.device
    settings = problem.settings
    terms = pooled_terms(generators, device)
    prepared = [term.prepare(problem) for term, _ in terms]
    entropy = torch.tensor([g.yloss == "entropy" for g in generators], device=device).view(S, 1)
    log_threshold = per_system([math.log(g.threshold) for g in generators], device).view(S, 1)
    rule = {name: torch.tensor([g.convergence == name for g in generators], device=device).view(S, 1)
            for name in ("threshold", "threshold_and_small_step", "threshold_and_small_gradient")}
    tolerance = per_system([g.tolerance for g in generators], device).view(S, 1)
    max_steps = torch.tensor([g.max_steps for g in generators], device=device).view(S, 1)
    gradient_mask = space.gradient_mask()

    state = space.initial()
    converged = torch.zeros(S, B, dtype=torch.bool, device=device)
    steps = torch.zeros(S, B, dtype=torch.long, device=device)
    # Active columns of the working batch: a slice until the first compaction, because indexing with a full
    # index tensor would copy every per-individual tensor on every step.
    index: slice | torch.Tensor = slice(None)
    work = state
    for t in range(max(g.max_steps for g in generators) + 1):
        work = work.detach().requires_grad_(True)
        x = space.candidates(work, index, straight_through=True)
        log_p = score(problem, x)
        all_valid = (log_p.detach() >= _LOG_HALF).all(-1)
        at_threshold = (log_p.detach() >= log_threshold.unsqueeze(-1)).all(-1)
        loss = yloss(log_p, entropy)
        batch = SearchBatch(problem, x, problem.context.standardizer.transform(x), log_p, all_valid, index)
        for (term, weight), prep in zip(terms, prepared):
            loss = loss + weight.view(S, 1) * term(batch, prep)
        (grad,) = torch.autograd.grad(loss.sum(), work)
        delta = space.step(grad, work, index)
        hit = at_threshold & rule["threshold"]
        hit |= all_valid & (delta.abs().flatten(2).amax(-1) < tolerance) & rule["threshold_and_small_step"]
        if bool(rule["threshold_and_small_gradient"].any()):
            small = torch.nan_to_num(grad * gradient_mask, nan=0.0).abs().flatten(2).amax(-1) < tolerance
            hit |= at_threshold & small & rule["threshold_and_small_gradient"]
        already = converged[:, index]
        converged[:, index] = already | hit
        # Systems whose own iteration cap is reached stop moving without being marked converged.
        active = ~(already | hit | (t >= max_steps))
        steps[:, index] += active.long()
        with torch.no_grad():
            work = space.move(work.detach(), delta, active, index)
        if t % settings.check_every == settings.check_every - 1 or t == 0:
            state[:, index] = work.detach()
            keep = active.any(0)
            if not keep.any():
                break
            if keep.sum() * 2 <= keep.numel():  # compact once half the batch is done everywhere
                full = torch.arange(B, device=device)[index]
                index, work = full[keep], work.detach()[:, keep]
    state[:, index] = work.detach()
    return finish(problem, space, state, converged, steps)


# ------------------------------------------------------------------------------------ gradient descent
@register_strategy("gradient")
def gradient_descent(problem: SearchProblem, generators: Sequence[GeneratorSpec]) -> SearchResult:
    """Plain gradient descent on yloss + weighted terms in the standardised feature space.

    yloss is the binary cross-entropy toward y+ = 1 averaged over the K copies (``-mean_k log p``), or the
    predictive entropy for generators with ``yloss="entropy"``. See :class:`FeatureSpace` for the step.
    """
    return descend(problem, generators, FeatureSpace(problem, generators))
