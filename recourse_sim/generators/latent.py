"""The ``"latent"`` strategy: gradient descent on the latent code z of a VAE (REVISE, CLUE).

The state is z (S, B, K, latent). Each iteration decodes ``dec(z)`` into the standardised space, maps it back to
features and runs the engine's constraint projection (immutable features overwritten with the factual values,
increase/decrease-only and bounds clamped, one-hot groups projected with a straight-through estimator), so
latent generators respect the constraints exactly like feature-space ones, and the gradient reaching z accounts
for the projection. yloss, objective terms and convergence are the engine's (:func:`engine.descend`).

Reference (CounterfactualExplanations.jl v0.1.5): the initial z of every copy is one sample from the encoder,
``z0 = mu(x) + sigma(x) * eps`` (no extra init noise in latent space); the step is ``-step_size * K * grad``
like the feature-space search.

On the CPU the search runs in the compiled kernel (:mod:`~recourse_sim.generators.search_kernel`, the decoder
written out in front of the projection) when every system of the search can, else in the torch loop; both agree
to float32 rounding and make the same draws.

Where the VAE comes from (``SearchContext.vae``):

- a fitted :class:`VAE` trained on standardised data (one system: shared by all; else indexed by system);
- a :class:`LatentCache` (what ``make_context`` installs): at the first latent search it trains one VAE per
  latent system on that system's *current* data (``context.data_X``, standardised) and keeps it, keyed by the
  model object being explained (weakly, so a run's model stacks each get their own VAEs) and the systems. When a later search sees
  different data for that model — in a simulation, the population moved — it warm-starts ``refit`` for
  ``retrain_epochs`` = 10 epochs first: the paper's "retrained 10 epochs per round". Because
  ``dataclasses.replace`` keeps the same cache object, the simulation's per-round contexts share it: one cache
  per run. The simulation also calls :meth:`LatentCache.prepare` each round, which trains the VAEs of all its
  model stacks as one stack before the searches ask for them;
- ``None``: a throw-away VAE is trained on ``data_X`` for this call only.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch

from recourse_sim.generators import compiled_search
from recourse_sim.generators.engine import (
    SearchSpace,
    check_compiled_backend,
    compiled_descent,
    descend,
    per_system,
    register_strategy,
)
from recourse_sim.generators.problem import SearchContext, SearchProblem, SearchResult
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.models.vae import VAE


class LatentCache:
    """Lazily trained VAEs for one run, keyed by the explained model; ``vae_params`` go to :class:`VAE`.

    Only the systems that run a latent generator get a VAE: the entry for a model is a stack over exactly the
    systems of the search that asked (in a simulation the same subset every round).
    """

    def __init__(self, **vae_params) -> None:
        VAE(**vae_params)  # validate the parameters now, not at the first latent search
        self.vae_params = vae_params
        self._entries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._by_id: dict[int, dict] = {}  # for models that cannot be weakly referenced
        self._joint: tuple[list, VAE, torch.Tensor] | None = None  # see prepare()

    def get(self, problem: SearchProblem, seed: int) -> VAE:
        """A VAE stack over ``problem.systems``, trained on (or refitted to) their current data, as described
        in the module docstring; ``seed`` seeds a fresh one."""
        data = _training_data(problem.context).index_select(0, problem.systems)
        per_model = self._per_model(problem.model)
        key = tuple(problem.systems.tolist())
        entry = per_model.get(key)
        if entry is None or entry[1].shape != data.shape:
            vae = _new_vae(self.vae_params, problem, seed).fit(data)
        else:
            vae, seen = entry
            if not torch.equal(seen, data):
                vae.refit(data)
        per_model[key] = (vae, data.clone())
        return vae

    def prepare(self, searches: Sequence[tuple[object, torch.Tensor, torch.Tensor]], seed: int) -> None:
        """Bring the VAEs of several upcoming searches up to date in *one* stacked training.

        ``searches`` holds ``(model, systems, data)`` per upcoming search, as :meth:`get` will see it:
        ``systems`` the latent systems of that search and ``data`` their current data, standardised. A
        simulation calls this once per round before its per-model-stack searches, so the VAEs of all stacks
        train as one stack (one optimiser step serves every system, instead of one step per stack): a fresh
        fit (seeded with ``seed``) the first time or when the searches change, else a warm-started ``refit``
        when the data moved. Each search's slice of the stack is then filed where :meth:`get` finds it.
        """
        keys = [(id(model), tuple(systems.tolist())) for model, systems, _ in searches]
        data = torch.cat([part for *_, part in searches])
        if self._joint is None or self._joint[0] != keys or self._joint[2].shape != data.shape:
            joint = VAE(**({"device": str(data.device), "seed": seed} | dict(self.vae_params))).fit(data)
        else:
            joint = self._joint[1]
            if not torch.equal(self._joint[2], data):
                joint.refit(data)
        self._joint = (keys, joint, data.clone())
        start = 0
        for (model, systems, part), (_, key) in zip(searches, keys):
            block = torch.arange(start, start + part.shape[0], device=joint.device_)
            self._per_model(model)[key] = (joint.select_systems(block), part.clone())
            start += part.shape[0]

    def _per_model(self, model: object) -> dict:
        try:
            return self._entries.setdefault(model, {})
        except TypeError:
            return self._by_id.setdefault(id(model), {})


def _training_data(context: SearchContext) -> torch.Tensor:
    if context.data_X is None:
        raise ValueError("latent generators need the systems' data to train a VAE (SearchContext.data_X)")
    return context.standardizer.transform(context.data_X)


def _new_vae(params: dict, problem: SearchProblem, seed: int) -> VAE:
    """A VAE on the search device with the given seed (unless ``params`` sets one)."""
    return VAE(**({"device": str(problem.factual.device), "seed": seed} | dict(params)))


def resolve_vae(problem: SearchProblem) -> tuple[VAE, torch.Tensor]:
    """The VAE for this search and the system index (S,) into its stack for each problem system.

    A seed for a VAE that may need training is drawn from the search's ``rng`` on every call, trained or
    not, so the rest of the random stream (encoder samples) does not depend on the cache's state.
    """
    source = problem.context.vae
    seed = int(torch.randint(0, 2**62, (1,), generator=problem.rng, device=problem.rng.device))
    own = torch.arange(len(problem.systems), device=problem.systems.device)  # a stack over problem.systems
    if isinstance(source, LatentCache):
        vae, systems = source.get(problem, seed), own
    elif source is None:
        data = _training_data(problem.context).index_select(0, problem.systems)
        vae, systems = _new_vae({}, problem, seed).fit(data), own
    elif isinstance(source, VAE):
        vae = source
        systems = problem.systems if vae.n_systems > 1 else torch.zeros_like(problem.systems)
    else:
        raise TypeError(f"SearchContext.vae must be a fitted VAE, a LatentCache or None; got {type(source).__name__}")
    d = problem.factual.shape[-1]
    if vae.n_features_in_ != d:
        raise ValueError(f"the VAE was fitted on {vae.n_features_in_} features; the factuals have {d}")
    if int(systems.max()) >= vae.n_systems:
        raise ValueError(f"the VAE holds {vae.n_systems} systems; the search asks for system {int(systems.max())}")
    return vae, systems.to(vae.device_)


class LatentSpace(SearchSpace):
    """z-space descent through the decoder, with the engine's projection applied to every decoded point."""

    pure = True

    def __init__(self, problem: SearchProblem, generators: Sequence[GeneratorSpec]) -> None:
        super().__init__(problem, generators)
        self.vae, self.vae_systems = resolve_vae(problem)
        K = problem.settings.n_counterfactuals
        scale = K if problem.settings.rescale_step_by_k else 1
        self.step_size = per_system([g.step_size * scale for g in generators], problem.factual.device).view(-1, 1, 1, 1)

    def initial(self) -> torch.Tensor:
        S, B, K, _ = self.problem.shape
        with torch.no_grad():
            mu, log_sigma = self.vae.encode_stacked(self.problem.factual_std, self.vae_systems)
        eps = torch.randn((S, B, K, mu.shape[-1]), generator=self.problem.rng, device=mu.device)
        return mu.unsqueeze(2) + log_sigma.exp().unsqueeze(2) * eps

    def candidates(self, work: torch.Tensor, index, straight_through: bool) -> torch.Tensor:
        S, B, K, L = work.shape
        x_std = self.vae.decode_stacked(work.reshape(S, B * K, L), self.vae_systems).view(S, B, K, -1)
        x = self.problem.context.standardizer.inverse_transform(x_std)
        factual = self.problem.factual[:, index].unsqueeze(2)
        return self.problem.context.constraints.project(x, factual, straight_through)

    def step(self, grad: torch.Tensor, work: torch.Tensor, index) -> torch.Tensor:
        return torch.nan_to_num(-self.step_size * grad, nan=0.0)

    def kernel_settings(self) -> dict[str, object]:
        """The compiled kernel decodes with each system's VAE decoder."""
        return {"decoder": self.vae.decoder_weights(self.vae_systems)}


@register_strategy("latent")
def latent_descent(problem: SearchProblem, generators: Sequence[GeneratorSpec]) -> SearchResult:
    """Gradient descent in a VAE's latent space, batched over systems, individuals and copies.

    On the CPU it runs in the compiled kernel (``compiled_search``) when every system can (backend ``"auto"``
    or ``"compiled"``), else every system runs in the torch loop: the systems share one VAE stack, resolved once
    per search, which splitting them into parts would resolve (and, from a ``LatentCache``, train) per part.
    """
    if problem.backend == "torch":
        return descend(problem, generators, LatentSpace(problem, generators))
    reasons = compiled_search.unsupported(problem, generators)
    source = problem.context.vae
    if isinstance(source, VAE):  # a LatentCache or None makes the package's VAE on the search's device
        reasons = [reason or compiled_search.unsupported_vae(source) for reason in reasons]
    check_compiled_backend(problem, reasons)  # refused before any VAE is trained
    space = LatentSpace(problem, generators)
    if any(reason is not None for reason in reasons):
        return descend(problem, generators, space)
    return compiled_descent(problem, generators, space)
