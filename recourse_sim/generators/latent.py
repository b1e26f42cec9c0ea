"""The ``"latent"`` strategy: gradient descent on the latent code z of a VAE (REVISE, CLUE).

The state is z (S, B, K, latent). Each iteration decodes ``dec(z)`` into the standardised space, maps it back to
features and runs the engine's constraint projection (immutable features overwritten with the factual values,
increase/decrease-only and bounds clamped, one-hot groups projected with a straight-through estimator), so
latent generators respect the constraints exactly like feature-space ones, and the gradient reaching z accounts
for the projection. yloss, objective terms and convergence are the engine's (:func:`engine.descend`).

Reference (CounterfactualExplanations.jl v0.1.5): the initial z of every copy is one sample from the encoder,
``z0 = mu(x) + sigma(x) * eps`` (no extra init noise in latent space); the step is ``-step_size * K * grad``
like the feature-space search.

Where the VAE comes from (``SearchContext.vae``):

- a fitted :class:`VAE` trained on standardised data (one system: shared by all; else indexed by system);
- a :class:`LatentCache` (what ``make_context`` installs): at the first latent search it trains one VAE per
  system of ``context.data_X`` (the systems' *current* data, standardised) and keeps it, keyed by the model
  object being explained (weakly, so a run's model stacks each get their own VAEs). When a later search sees
  different data for that model — in a simulation, the population moved — it warm-starts ``refit`` for
  ``retrain_epochs`` = 10 epochs first: the paper's "retrained 10 epochs per round". Because
  ``dataclasses.replace`` keeps the same cache object, the simulation's per-round contexts share it: one cache
  per run;
- ``None``: a throw-away VAE is trained on ``data_X`` for this call only.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch

from recourse_sim.generators.engine import SearchSpace, descend, per_system, register_strategy
from recourse_sim.generators.problem import SearchContext, SearchProblem, SearchResult
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.models.vae import VAE


class LatentCache:
    """Lazily trained VAEs for one run, keyed by the explained model; ``vae_params`` go to :class:`VAE`."""

    def __init__(self, **vae_params) -> None:
        VAE(**vae_params)  # validate the parameters now, not at the first latent search
        self.vae_params = vae_params
        self._entries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._fallback: dict[int, tuple[VAE, torch.Tensor]] = {}

    def get(self, problem: SearchProblem) -> VAE:
        """The VAE stack for ``problem.context.data_X`` (trained or refitted on it as described above)."""
        data = _training_data(problem.context)
        try:
            entry = self._entries.get(problem.model)
            store = self._entries
            key = problem.model
        except TypeError:  # model not weak-referenceable: keep it by id for the run
            store, key = self._fallback, id(problem.model)
            entry = store.get(key)
        if entry is None or entry[1].shape != data.shape:
            vae = _new_vae(self.vae_params, problem).fit(data)
        else:
            vae, seen = entry
            if not torch.equal(seen, data):
                vae.refit(data)
        store[key] = (vae, data.clone())
        return vae


def _training_data(context: SearchContext) -> torch.Tensor:
    if context.data_X is None:
        raise ValueError("latent generators need the systems' data to train a VAE (SearchContext.data_X)")
    return context.standardizer.transform(context.data_X)


def _new_vae(params: dict, problem: SearchProblem) -> VAE:
    """A VAE on the search device, seeded from the search's generator (reproducible under a seed)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=problem.generator, device=problem.generator.device))
    params = {"device": str(problem.factual.device), "seed": seed} | dict(params)
    return VAE(**params)


def resolve_vae(problem: SearchProblem) -> tuple[VAE, torch.Tensor]:
    """The VAE for this search and the system index (S,) into its stack for each problem system."""
    source = problem.context.vae
    if isinstance(source, LatentCache):
        vae = source.get(problem)
    elif source is None:
        vae = _new_vae({}, problem).fit(_training_data(problem.context))
    elif isinstance(source, VAE):
        vae = source
    else:
        raise TypeError(f"SearchContext.vae must be a fitted VAE, a LatentCache or None; got {type(source).__name__}")
    d = problem.factual.shape[-1]
    if vae.n_features_in_ != d:
        raise ValueError(f"the VAE was fitted on {vae.n_features_in_} features; the factuals have {d}")
    systems = problem.systems if vae.n_systems > 1 else torch.zeros_like(problem.systems)
    if int(systems.max()) >= vae.n_systems:
        raise ValueError(f"the VAE holds {vae.n_systems} systems; the search asks for system {int(systems.max())}")
    return vae, systems.to(vae.device_)


class LatentSpace(SearchSpace):
    """z-space descent through the decoder, with the engine's projection applied to every decoded point."""

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
        eps = torch.randn((S, B, K, mu.shape[-1]), generator=self.problem.generator, device=mu.device)
        return mu.unsqueeze(2) + log_sigma.exp().unsqueeze(2) * eps

    def candidates(self, work: torch.Tensor, index, straight_through: bool) -> torch.Tensor:
        S, B, K, L = work.shape
        x_std = self.vae.decode_stacked(work.reshape(S, B * K, L), self.vae_systems).view(S, B, K, -1)
        x = self.problem.context.standardizer.inverse_transform(x_std)
        factual = self.problem.factual[:, index].unsqueeze(2)
        return self.problem.context.constraints.project(x, factual, straight_through)

    def step(self, grad: torch.Tensor, work: torch.Tensor, index) -> torch.Tensor:
        return torch.nan_to_num(-self.step_size * grad, nan=0.0)


@register_strategy("latent")
def latent_descent(problem: SearchProblem, generators: Sequence[GeneratorSpec]) -> SearchResult:
    """Gradient descent in a VAE's latent space, batched over systems, individuals and copies."""
    return descend(problem, generators, LatentSpace(problem, generators))
