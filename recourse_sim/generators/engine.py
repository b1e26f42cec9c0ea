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

import contextlib
import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Sequence

import torch

from recourse_sim.cores import compiled_threads
from recourse_sim.device import flush_denormals, torch_threads
from recourse_sim.errors import ConfigError
from recourse_sim.generators.problem import (
    SearchBatch,
    SearchContext,
    SearchProblem,
    SearchResult,
    SearchSettings,
    StackedScorer,
    StepHook,
    StepRecord,
)
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.generators.terms import ObjectiveTerm
from recourse_sim.models.base import DECISION_THRESHOLD, LOG_DECISION_THRESHOLD

# Below this many candidate rows (S x B x K) a CPU search runs on one intra-op thread: its kernels are too small
# to gain from splitting, and under CPU contention every OpenMP region can stall (measured on 2 busy cores,
# B = 1,000 and 10,000: 4-5x slower with 2 threads than with 1; see recourse_sim.device.torch_threads).
PARALLEL_ROWS = 32_768

#: implementations of the gradient strategy (see :func:`search`)
BACKENDS = ("auto", "compiled", "torch")

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
    rng: torch.Generator | None = None,
    on_step: StepHook | None = None,
    backend: str = "auto",
) -> SearchResult:
    """Counterfactuals for ``factual`` (S, B, d): system ``s`` uses ``generators[s]`` and model system ``systems[s]``.

    Systems are grouped by strategy (gradient, greedy, latent, ...) and each group runs as one batched call.
    ``rng`` is the torch random generator for every draw of the search (initial noise, tie-breaks, ...);
    ``on_step`` is called at every iteration of every strategy group's loop with a :class:`StepRecord` (see
    :func:`descend`); it only observes: with ``backend="torch"`` the result is the same with or without it (with
    ``"auto"``, a hooked gradient, greedy or latent search runs the torch loop, an unhooked one may run compiled).

    ``backend`` (the gradient, greedy and latent strategies'; the others have only the torch loop): ``"compiled"`` runs
    the whole search as one numba-compiled call (:mod:`~recourse_sim.generators.compiled_search`; CPU, the
    package's networks, the common terms and constraints), ``"torch"`` the torch loop :func:`descend` (every
    device, model and term, and ``on_step``), ``"auto"`` compiled wherever it can run, else torch. The two agree
    to float32 rounding (greedy: except where features tie, see :mod:`~recourse_sim.generators.greedy`).
    """
    S, B, d = factual.shape
    if len(generators) != S:
        raise ConfigError("generators", len(generators), f"one generator per system ({S})")
    if backend not in BACKENDS:
        raise ConfigError("search backend", backend, f"one of {', '.join(BACKENDS)}")
    device = factual.device
    small = device.type == "cpu" and S * B * settings.n_counterfactuals < PARALLEL_ROWS and torch.get_num_threads() > 1
    # the compiled backend's budget (the caller's torch thread count, or an executor's share): it splits its own work
    threads = compiled_threads()
    with torch_threads(1) if small else contextlib.nullcontext():
        return _search(model, factual, generators, context, systems, settings, rng, on_step, backend, threads)


def _search(model: StackedScorer, factual: torch.Tensor, generators: Sequence[GeneratorSpec], context: SearchContext,
            systems: torch.Tensor | None, settings: SearchSettings, rng: torch.Generator | None,
            on_step: StepHook | None, backend: str, threads: int) -> SearchResult:
    """:func:`search` once its arguments are checked and its torch threads set."""
    device = factual.device
    systems = torch.arange(factual.shape[0], device=device) if systems is None else systems.to(device)
    rng = rng or torch.Generator(device=device)
    names = list(dict.fromkeys(g.strategy for g in generators))  # in order of appearance: the order of the draws
    for name in names:
        if name not in STRATEGIES:
            raise ConfigError("generator.strategy", name, f"one of {', '.join(sorted(STRATEGIES))}")
    problem = SearchProblem(model=model, factual=factual, systems=systems, context=context, settings=settings,
                            rng=rng, on_step=on_step, backend=backend, threads=threads)
    parts = [([i for i, g in enumerate(generators) if g.strategy == name], STRATEGIES[name]) for name in names]
    return in_parts(problem, generators, parts)


def in_parts(problem: SearchProblem, generators: Sequence[GeneratorSpec],
             parts: Sequence[tuple[Sequence[int], Strategy]]) -> SearchResult:
    """Each part's systems (rows of ``problem``) searched by its own function, one part after the other, and the
    results put back in system order."""
    S, B, K, d = problem.shape
    if len(parts) == 1 and len(parts[0][0]) == S:  # one part: no gathering and scattering
        return parts[0][1](problem, generators)
    device = problem.factual.device
    result = SearchResult(
        counterfactuals=torch.empty(S, B, K, d, device=device),
        proba=torch.empty(S, B, K, device=device),
        converged=torch.zeros(S, B, dtype=torch.bool, device=device),
        steps=torch.zeros(S, B, dtype=torch.long, device=device),
    )
    for rows, strategy in parts:
        index = torch.tensor(list(rows), device=device)
        sub = dataclasses.replace(problem, factual=problem.factual[index], systems=problem.systems[index])
        part = strategy(sub, [generators[i] for i in rows])
        result.counterfactuals[index] = part.counterfactuals
        result.proba[index] = part.proba
        result.converged[index] = part.converged
        result.steps[index] = part.steps
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
    noise = torch.randn(start.shape, generator=problem.rng, device=start.device)
    return project_state(problem, start + problem.settings.init_noise * noise, slice(None))


def decode(problem: SearchProblem, state: torch.Tensor, index, straight_through: bool = False) -> torch.Tensor:
    """Search-space state (S, B', K, d) -> feasible feature-space candidates."""
    x = problem.context.standardizer.inverse_transform(state)
    constraints = problem.context.constraints
    if not constraints.active and not constraints.groups:  # nothing to project onto: skip gathering the factuals
        return x
    return constraints.project(x, problem.factual[:, index].unsqueeze(2), straight_through)


def project_state(problem: SearchProblem, state: torch.Tensor, index) -> torch.Tensor:
    return problem.context.standardizer.transform(decode(problem, state, index))


def score(problem: SearchProblem, x: torch.Tensor) -> torch.Tensor:
    """log p(y=1) of candidates (S, B', K, d) -> (S, B', K)."""
    S, B, K, d = x.shape
    return problem.model.log_proba_stacked(x.reshape(S, B * K, d), problem.model_systems).view(S, B, K)


def yloss(log_p: torch.Tensor, entropy: torch.Tensor | bool | None = None) -> torch.Tensor:
    """Per-individual yloss (S, B') from log p(y=1) (S, B', K), averaged over the K copies.

    ``"bce"`` (default): the binary cross-entropy toward y+ = 1, ``-log p``. ``"entropy"`` where ``entropy``
    is set: the predictive entropy ``-p log p - (1-p) log(1-p)`` (CLUE, Antoran et al. 2021). ``entropy`` is
    a boolean (S, 1) tensor for a mix of systems, or a Python bool / None when every system agrees: the
    choice is made on the host, so the search loop never reads a device tensor to make it.
    """
    if entropy is None or entropy is False:
        return -log_p.mean(-1)
    p = log_p.exp()
    log_q = torch.log1p(-p.clamp(max=1.0 - 1e-6))  # finite everywhere, so torch.where has clean gradients
    ent = -(p * log_p + (1.0 - p) * log_q).mean(-1)
    if entropy is True:
        return ent
    return torch.where(entropy, ent, -log_p.mean(-1))


def per_system_flag(flags: Sequence[bool], device: torch.device) -> torch.Tensor | bool:
    """A per-system boolean as a Python bool when every system agrees, else an (S, 1) mask tensor."""
    if all(flags) or not any(flags):
        return bool(flags and flags[0])
    return torch.tensor(list(flags), dtype=torch.bool, device=device).view(-1, 1)


def _where(flag: torch.Tensor | bool, mask: torch.Tensor) -> torch.Tensor | None:
    """``mask & flag`` for a per-system flag from :func:`per_system_flag`; None where the flag is False."""
    if flag is False:
        return None
    return mask if flag is True else mask & flag


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

    # ``step`` and ``move`` are pure functions of their arguments (no state of the space changes), so a
    # compiled search may trace them into its graph (``SearchSettings.compile``).
    pure = False

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

    def kernel_settings(self) -> dict[str, object]:
        """What the compiled kernel needs beyond gradient descent's settings: keyword arguments of
        ``compiled_search.run_kernel`` (``greedy``, ``decoder``); none for plain gradient descent."""
        return {}

    def kernel_done(self, steps: torch.Tensor) -> None:
        """Called after the compiled kernel searched with this space, with every individual's step count."""


class FeatureSpace(SearchSpace):
    """Plain gradient descent in the standardised feature space, projected onto the constraints every step.

    The step is ``-step_size * K * grad`` (the reference code's rescale; ``rescale_step_by_k=False`` drops it)
    with NaN steps zeroed as in the reference code; immutable features get no step.
    """

    pure = True

    def __init__(self, problem: SearchProblem, generators: Sequence[GeneratorSpec]) -> None:
        super().__init__(problem, generators)
        K = problem.settings.n_counterfactuals
        scale = K if problem.settings.rescale_step_by_k else 1
        self.step_size = per_system([g.step_size * scale for g in generators], problem.factual.device).view(-1, 1, 1, 1)
        self.neg_step_size = -self.step_size
        self.step_mask = problem.context.constraints.step_mask()
        # Multiplying by an all-ones mask changes nothing: skip the kernel when no feature is immutable.
        self.masks_steps = "none" in problem.context.constraints.active

    def initial(self) -> torch.Tensor:
        return initial_state(self.problem)

    def candidates(self, work: torch.Tensor, index, straight_through: bool) -> torch.Tensor:
        return decode(self.problem, work, index, straight_through)

    def gradient_mask(self) -> torch.Tensor:
        return self.step_mask

    def step(self, grad: torch.Tensor, work: torch.Tensor, index) -> torch.Tensor:
        delta = torch.nan_to_num(self.neg_step_size * grad, nan=0.0)
        return delta * self.step_mask if self.masks_steps else delta

    def move(self, work: torch.Tensor, delta: torch.Tensor, active: torch.Tensor, index) -> torch.Tensor:
        # The projection acts row by row and inactive rows keep ``work``, so ``work + delta`` moves exactly
        # as ``work + delta * active`` would.
        moved = project_state(self.problem, work + delta, index)
        return torch.where(active.view(*active.shape, 1, 1), moved, work)


# ------------------------------------------------------------------------------------------ the loop
Objective = Callable[..., tuple[torch.Tensor, tuple]]


def _eager_gradient(objective: Objective) -> Callable:
    def gradient(work: torch.Tensor, *args) -> tuple[torch.Tensor, tuple]:
        work = work.detach().requires_grad_(True)
        total, aux = objective(work, *args)
        (grad,) = torch.autograd.grad(total, work)
        return grad, aux

    return gradient


def _compiled_or(eager: Callable, build: Callable[[], Callable]) -> Callable:
    """``torch.compile(build())`` where it works, else ``eager``: compilation that is unavailable (no
    compiler, an unsupported model or term) falls back, with a warning, at set-up or at the first call."""
    try:
        compiled = torch.compile(build(), dynamic=True)
    except Exception as error:  # noqa: BLE001 - any failure to set up compilation means: run eagerly
        warnings.warn(f"search: torch.compile unavailable ({error}); using autograd", RuntimeWarning, stacklevel=3)
        return eager
    use = [compiled]

    def run(*args):
        if use[0] is not eager:
            try:
                return use[0](*args)
            except Exception as error:  # noqa: BLE001 - compile errors surface at the first call
                warnings.warn(f"search: compiling the step failed ({type(error).__name__}: {error}); using autograd",
                              RuntimeWarning, stacklevel=3)
                use[0] = eager
        return eager(*args)

    return run


def descend(problem: SearchProblem, generators: Sequence[GeneratorSpec], space: SearchSpace) -> SearchResult:
    """The iteration shared by every strategy: score candidates, evaluate yloss + weighted terms, take the
    space's step, test convergence per individual, and compact finished individuals out of the batch.

    Convergence rules (per system, see :class:`GeneratorSpec`): ``"threshold"`` — all K copies reach gamma;
    ``"threshold_and_small_step"`` — all copies valid (p >= 0.5) and every |step| < tolerance;
    ``"threshold_and_small_gradient"`` — all copies reach gamma and every |mutability-masked objective
    gradient| < tolerance (ECCCo). An individual stops moving once converged or at its system's cap.

    Host-device synchronisation: which yloss, which convergence rules and which caps apply is decided once,
    on the host, from ``generators``; inside the loop the only device read is one count of the still-active
    individuals every ``settings.check_every`` steps (and at t = 0), for the early exit and the compaction.
    ``problem.on_step``, if set, sees a :class:`StepRecord` at every iteration.
    """
    S, B, K, _ = problem.shape
    device = problem.factual.device
    settings = problem.settings
    terms = [(term, weight.view(S, 1)) for term, weight in pooled_terms(generators, device)]
    prepared = [term.prepare(problem) for term, _ in terms]
    # Per-system choices as Python bools where every system agrees (the common case), masks otherwise.
    entropy = per_system_flag([g.yloss == "entropy" for g in generators], device)
    rule = {name: per_system_flag([g.convergence == name for g in generators], device)
            for name in ("threshold", "threshold_and_small_step", "threshold_and_small_gradient")}
    thresholds = [g.threshold for g in generators]
    # gamma = 0.5 everywhere: "all copies reach gamma" is "all copies valid", already computed.
    threshold_is_half = all(th == DECISION_THRESHOLD for th in thresholds)
    log_threshold = per_system([math.log(th) for th in thresholds], device).view(S, 1, 1)
    need_threshold = rule["threshold"] is not False or rule["threshold_and_small_gradient"] is not False
    tolerance = per_system([g.tolerance for g in generators], device).view(S, 1)
    caps = [g.max_steps for g in generators]
    gradient_mask = space.gradient_mask()
    on_step = problem.on_step
    check_every = settings.check_every

    def objective(work: torch.Tensor, index, factual_std: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Summed objective and, as auxiliary values, log p, validity and (for ``on_step``) the candidates
        and the loss per individual. ``factual_std``: the working batch's factuals in the search space."""
        x = space.candidates(work, index, straight_through=True)
        log_p = score(problem, x)
        log_p_value = log_p.detach()
        all_valid = (log_p_value >= LOG_DECISION_THRESHOLD).all(-1)
        loss = yloss(log_p, entropy)
        if terms:
            x_std = problem.context.standardizer.transform(x)
            batch = SearchBatch(problem, x, x_std, log_p, all_valid, index, factual_std)
            for (term, weight), prep in zip(terms, prepared):
                loss = loss + weight * term(batch, prep)
        seen = (x.detach(), loss.detach()) if on_step is not None else ()
        return loss.sum(), (log_p_value, all_valid, *seen)

    def iterate(gradient: Callable, work: torch.Tensor, index, factual_std: torch.Tensor, done: torch.Tensor,
                taken: torch.Tensor, capped: torch.Tensor | None) -> tuple:
        """One iteration for the working batch: gradient, step, convergence, move. ``capped`` (S, 1): systems
        at their iteration cap (None: none is). Returns the moved state, the updated convergence flags and
        step counts, the active mask, log p and the on_step extras."""
        grad, (log_p_value, all_valid, *seen) = gradient(work, index, factual_std)
        at_threshold = None
        if need_threshold:
            at_threshold = all_valid if threshold_is_half else (log_p_value >= log_threshold).all(-1)
        delta = space.step(grad, work, index)
        hits = [_where(rule["threshold"], at_threshold)]
        if rule["threshold_and_small_step"] is not False:
            small = all_valid & (delta.abs().flatten(2).amax(-1) < tolerance)
            hits.append(_where(rule["threshold_and_small_step"], small))
        if rule["threshold_and_small_gradient"] is not False:
            small = torch.nan_to_num(grad * gradient_mask, nan=0.0).abs().flatten(2).amax(-1) < tolerance
            hits.append(_where(rule["threshold_and_small_gradient"], at_threshold & small))
        stop = done
        for hit in hits:
            if hit is not None:
                stop = stop | hit
        done = stop
        # Systems whose own iteration cap is reached stop moving without being marked converged.
        if capped is not None:
            stop = stop | capped
        active = ~stop
        taken = taken + active
        with torch.no_grad():
            work = space.move(work.detach(), delta, active, index)
        return work, done, taken, active, log_p_value, seen

    eager_gradient = _eager_gradient(objective)

    def eager_iterate(*args) -> tuple:
        return iterate(eager_gradient, *args)

    if not settings.compile:
        step = eager_iterate
    elif space.pure:  # the whole iteration as one compiled graph
        step = _compiled_or(eager_iterate, lambda: functools.partial(iterate, torch.func.grad(objective, has_aux=True)))
    else:  # a space with state of its own (greedy): only objective + gradient compiled
        gradient = _compiled_or(eager_gradient, lambda: torch.func.grad(objective, has_aux=True))
        step = functools.partial(iterate, gradient)
    # t -> (S, 1) "system at its iteration cap", for the iterations where some system is (made up front).
    cap_tensor = torch.tensor(caps, device=device).view(S, 1)
    cap_flags = {t: cap_tensor <= t for t in range(min(caps), max(caps) + 1)}

    state = space.initial()
    converged = torch.zeros(S, B, dtype=torch.bool, device=device)
    steps = torch.zeros(S, B, dtype=torch.long, device=device)
    everyone = torch.arange(B, device=device)
    # Active columns of the working batch: a slice until the first compaction, because indexing with a full
    # index tensor would copy every per-individual tensor on every step. ``done`` and ``taken`` are the
    # working batch's convergence flags and step counts, written back at every check.
    index: slice | torch.Tensor = slice(None)
    factual_std = problem.factual_std
    work = state
    done = converged
    taken = steps
    for t in range(max(caps) + 1):
        work, done, taken, active, log_p_value, seen = step(work, index, factual_std, done, taken, cap_flags.get(t))
        if on_step is not None:
            on_step(StepRecord(t, everyone[index], seen[0], log_p_value, seen[1], active))
        if _is_check(t, check_every):
            state[:, index] = work
            converged[:, index] = done
            steps[:, index] = taken
            keep = active.any(0)
            remaining = int(keep.sum())  # the loop's one host read, every check_every steps
            if remaining == 0:
                break
            if remaining * 2 <= keep.numel():  # compact once half the batch is done everywhere
                index = everyone[index][keep]
                work, done, taken = work[:, keep], done[:, keep], taken[:, keep]
                factual_std = problem.factual_std[:, index]
    state[:, index] = work
    converged[:, index] = done
    steps[:, index] = taken
    return finish(problem, space, state, converged, steps)


def _is_check(t: int, check_every: int) -> bool:
    """Whether :func:`descend` reads the device after iteration ``t``: at t = 0, then every ``check_every`` steps."""
    return t == 0 or t % check_every == check_every - 1


def iterations_of_descend(steps: torch.Tensor, generators: Sequence[GeneratorSpec], check_every: int) -> int:
    """How many iterations :func:`descend` runs for searches that end with these step counts (S, B): it stops at
    the first check (:func:`_is_check`) where no individual is active any more, an individual being active in
    iterations 0 to steps - 1, or after the largest cap."""
    last = max(g.max_steps for g in generators)
    longest = int(steps.max()) if steps.numel() else 0
    return next((t for t in range(longest, last + 1) if _is_check(t, check_every)), last) + 1


# ------------------------------------------------------------------------------------ gradient descent
@register_strategy("gradient")
def gradient_descent(problem: SearchProblem, generators: Sequence[GeneratorSpec]) -> SearchResult:
    """Plain gradient descent on yloss + weighted terms in the standardised feature space.

    yloss is the binary cross-entropy toward y+ = 1 averaged over the K copies (``-mean_k log p``), or the
    predictive entropy for generators with ``yloss="entropy"``. See :class:`FeatureSpace` for the step, and
    :func:`search` for the backends.
    """
    return descend_or_compile(problem, generators, FeatureSpace)


def descend_or_compile(problem: SearchProblem, generators: Sequence[GeneratorSpec],
                       make_space: Callable[[SearchProblem, Sequence[GeneratorSpec]], SearchSpace]) -> SearchResult:
    """A feature-space search (``make_space``: :class:`FeatureSpace` or a subclass) in the compiled kernel
    (:func:`compiled_descent`) for the systems it can serve (``problem.backend``), in :func:`descend` for the
    others."""
    from recourse_sim.generators import compiled_search  # its check imports no numba; the kernel comes later

    def in_torch(part: SearchProblem, specs: Sequence[GeneratorSpec]) -> SearchResult:
        return descend(part, specs, make_space(part, specs))

    def compiled(part: SearchProblem, specs: Sequence[GeneratorSpec]) -> SearchResult:
        return compiled_descent(part, specs, make_space(part, specs))

    if problem.backend == "torch":
        return in_torch(problem, generators)
    reasons = compiled_search.unsupported(problem, generators)
    check_compiled_backend(problem, reasons)
    fast = [i for i, reason in enumerate(reasons) if reason is None]
    slow = [i for i, reason in enumerate(reasons) if reason is not None]
    return in_parts(problem, generators, [(rows, run) for rows, run in ((fast, compiled), (slow, in_torch)) if rows])


def compiled_descent(problem: SearchProblem, generators: Sequence[GeneratorSpec], space: SearchSpace) -> SearchResult:
    """:func:`descend`'s search in one call of the compiled kernel, for systems ``compiled_search.unsupported``
    does not object to. The draws are descend's, in its order (the terms' preparation, then the initial state),
    so both backends start from the same state; ``space.kernel_done`` then makes any draws the torch loop would
    have made during the search."""
    from recourse_sim.generators import compiled_search

    terms = pooled_terms(generators, problem.factual.device)
    prepared = [term.prepare(problem) for term, _ in terms]
    state = space.initial()
    work, converged, steps = compiled_search.run_kernel(problem, generators, terms, prepared, state, space.step_size,
                                                        **space.kernel_settings())
    space.kernel_done(steps)
    return finish(problem, space, work, converged, steps)


def check_compiled_backend(problem: SearchProblem, reasons: Sequence[str | None]) -> None:
    """Refuse a search that asks for the compiled backend (``backend = "compiled"``) where some system cannot
    have it: ``reasons`` per system, None where it can."""
    refused = [reason for reason in reasons if reason is not None]
    if refused and problem.backend == "compiled":
        raise ConfigError("search backend", "compiled", f'"auto" or "torch" here: {refused[0]}')
