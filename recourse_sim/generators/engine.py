"""The one batched counterfactual search engine.

It moves a (S, B, K, d) state — S systems x B individuals x K copies x d features — with per-individual
convergence masks, and enforces the feature constraints after every step for every generator. Systems with
different generators share one call: every distinct objective term is evaluated once per iteration and
weighted per system. Individuals that have converged in every system are compacted out of the working
batch (checked every ``check_every`` steps to avoid a host-device sync per step), so early finishers stop
costing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from recourse_sim.errors import ConfigError
from recourse_sim.generators.problem import SearchBatch, SearchContext, SearchProblem, SearchResult, SearchSettings, StackedScorer
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.generators.terms import ObjectiveTerm

_LOG_HALF = math.log(0.5)

Strategy = Callable[[SearchProblem, Sequence[GeneratorSpec]], SearchResult]
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    def add(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return add


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


def finish(problem: SearchProblem, state: torch.Tensor, converged: torch.Tensor, steps: torch.Tensor) -> SearchResult:
    with torch.no_grad():
        x = decode(problem, state, slice(None))
        proba = score(problem, x).exp()
    return SearchResult(counterfactuals=x, proba=proba, converged=converged, steps=steps)


# ------------------------------------------------------------------------------------ gradient descent
@register_strategy("gradient")
def gradient_descent(problem: SearchProblem, generators: Sequence[GeneratorSpec]) -> SearchResult:
    """Plain gradient descent on yloss + weighted terms in the standardised feature space.

    yloss is the binary cross-entropy toward y+ = 1 averaged over the K copies (``-mean_k log p``). The step is
    ``-step_size * K * grad`` (the reference code's rescale; ``rescale_step_by_k=False`` drops it); NaN steps
    are zeroed as in the reference code.
    """
    S, B, K, d = problem.shape
    device = problem.factual.device
    settings = problem.settings
    terms = pooled_terms(generators, device)
    prepared = [term.prepare(problem) for term, _ in terms]
    step_size = per_system([g.step_size * (K if settings.rescale_step_by_k else 1) for g in generators], device)
    log_threshold = per_system([math.log(g.threshold) for g in generators], device).view(S, 1)
    small_step_rule = torch.tensor([g.convergence == "threshold_and_small_step" for g in generators], device=device)
    tolerance = per_system([g.tolerance for g in generators], device).view(S, 1)
    max_steps = torch.tensor([g.max_steps for g in generators], device=device).view(S, 1)
    step_mask = problem.context.constraints.step_mask()

    state = initial_state(problem)
    converged = torch.zeros(S, B, dtype=torch.bool, device=device)
    steps = torch.zeros(S, B, dtype=torch.long, device=device)
    index = torch.arange(B, device=device)  # active columns of the working batch
    work = state
    for t in range(max(g.max_steps for g in generators) + 1):
        work = work.detach().requires_grad_(True)
        x = decode(problem, work, index, straight_through=True)
        log_p = score(problem, x)
        all_valid = (log_p.detach() >= _LOG_HALF).all(-1)
        threshold_hit = (log_p.detach() >= log_threshold.unsqueeze(-1)).all(-1) & ~small_step_rule.view(S, 1)
        loss = -log_p.mean(-1)
        batch = SearchBatch(problem, x, problem.context.standardizer.transform(x), log_p, all_valid, index)
        for (term, weight), prep in zip(terms, prepared):
            loss = loss + weight.view(S, 1) * term(batch, prep)
        (grad,) = torch.autograd.grad(loss.sum(), work)
        delta = torch.nan_to_num(-step_size.view(S, 1, 1, 1) * grad, nan=0.0) * step_mask
        small_hit = all_valid & (delta.abs().amax((-1, -2)) < tolerance) & small_step_rule.view(S, 1)
        already = converged[:, index]
        converged[:, index] = already | threshold_hit | small_hit
        # Systems whose own iteration cap is reached stop moving without being marked converged.
        active = ~(already | threshold_hit | small_hit | (t >= max_steps))
        steps[:, index] += active.long()
        with torch.no_grad():
            moved = project_state(problem, work + delta * active.view(S, -1, 1, 1), index)
            work = torch.where(active.view(S, -1, 1, 1), moved, work)
        if t % settings.check_every == settings.check_every - 1 or t == 0:
            state[:, index] = work.detach()
            keep = active.any(0)
            if not keep.any():
                break
            if keep.sum() * 2 <= keep.numel():  # compact once half the batch is done everywhere
                index, work = index[keep], work.detach()[:, keep]
    state[:, index] = work.detach()
    return finish(problem, state, converged, steps)
