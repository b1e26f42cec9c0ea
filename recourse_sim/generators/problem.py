"""The data structures shared by the search engine, its strategies and the objective terms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from recourse_sim.data.dataset import Standardizer
from recourse_sim.generators.constraints import FeatureConstraints
from recourse_sim.settings import check_fields, require


class StackedScorer(Protocol):
    """What the engine needs from a classifier: differentiable log p(y=1|x) over a stack of systems."""

    def log_proba_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        """``X`` (S', N, d) -> (S', N); ``systems`` (S',) indexes the model's stack."""
        ...


@dataclass(frozen=True)
class SearchSettings:
    """Engine settings shared by all generators of one call, the ``[search]`` table of a scenario (paper-era
    CounterfactualExplanations.jl v0.1.5).

    - ``n_counterfactuals`` K=5 copies per individual (the SaTML 2023 footnote: one is implemented at random);
    - ``init_noise`` 0.1: copies start at ``x + 0.1 N(0, I)`` in the search space;
    - ``rescale_step_by_k``: the reference code multiplies the step by K (its loss averages over copies);
    - ``check_every`` 10: host-device synchronisation cadence for the early exit and batch compaction;
    - ``standardize``: search (and measure distances) in the space of features standardised on the initial
      data, as the reference code does; ``False`` searches in raw feature units;
    - ``compile`` False: evaluate objective and gradient as one ``torch.compile``-d graph (``torch.func.grad``)
      instead of eager autograd. Pays a one-off compile (seconds) per process and generator mix, so it is for
      long or large searches; results equal the eager ones within float tolerance (not bit for bit), and it
      falls back to eager autograd, with a warning, where compilation is unavailable.
    """

    n_counterfactuals: int = 5
    init_noise: float = 0.1
    rescale_step_by_k: bool = True
    check_every: int = 10
    standardize: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "search")
        require(self.n_counterfactuals >= 1, "search.n_counterfactuals", self.n_counterfactuals, "an integer >= 1")
        require(self.init_noise >= 0, "search.init_noise", self.init_noise, "a number >= 0")
        require(self.check_every >= 1, "search.check_every", self.check_every, "an integer >= 1")


@dataclass(frozen=True)
class SearchContext:
    """What the search knows about the world beyond the factuals.

    ``standardizer`` defines the search (and distance) space, fitted once on the initial data;
    ``data_X``/``data_y`` (S_model, n, d)/(S_model, n) are each system's current training data, used by terms
    that look at the population (gravitational centre, plausibility); ``mad`` (d,) is the median absolute
    deviation of each feature in the search space (Wachter et al. 2017 weighting).

    ``vae`` serves the latent-space generators (REVISE, CLUE): a fitted :class:`~recourse_sim.models.vae.VAE`
    trained in the standardised search space (one system: shared by every system; S_model systems: indexed
    like ``data_X``), or a :class:`~recourse_sim.generators.latent.LatentCache` that trains one lazily on
    ``data_X`` at the first latent search and keeps it for the run (``make_context`` installs one). ``None``:
    a latent search trains a throw-away VAE on ``data_X`` on every call.
    """

    standardizer: Standardizer
    constraints: FeatureConstraints
    data_X: torch.Tensor | None = None
    data_y: torch.Tensor | None = None
    mad: torch.Tensor | None = None
    feature_names: tuple[str, ...] = ()
    vae: object | None = None


@dataclass(frozen=True)
class StepRecord:
    """What an ``on_step`` hook sees at iteration ``t`` of a search (read-only: detached tensors; do not modify).

    ``index`` (B',) are the individuals still in the working batch (all of them until the first compaction);
    ``x`` (S, B', K, d) the candidates scored at this iteration (feature space, projected); ``log_p`` (S, B', K)
    their log p(y=1); ``loss`` (S, B') the objective per individual (yloss + weighted terms); ``active``
    (S, B') which individuals move after this iteration (not converged, below their system's cap).
    """

    t: int
    index: torch.Tensor
    x: torch.Tensor
    log_p: torch.Tensor
    loss: torch.Tensor
    active: torch.Tensor


StepHook = Callable[[StepRecord], None]


@dataclass
class SearchProblem:
    """One engine call: S systems x B individuals x K copies.

    ``rng`` is the torch random generator of every draw in the search; ``on_step`` an optional observer
    called once per iteration with a :class:`StepRecord`; ``backend`` which implementation a strategy uses
    (see :func:`~recourse_sim.generators.engine.search`) and ``threads`` how many CPU threads the compiled one
    may use.
    """

    model: StackedScorer
    factual: torch.Tensor  # (S, B, d) feature space
    systems: torch.Tensor  # (S,) indices into the model's stack (and into context.data_X)
    context: SearchContext
    settings: SearchSettings
    rng: torch.Generator
    on_step: StepHook | None = None
    backend: str = "auto"
    threads: int = 1
    factual_std: torch.Tensor = field(init=False)
    # ``systems`` as passed to the model: None when it is the model's whole stack in order, which spares the
    # model a per-step gather of its weights (decided once here, on the host).
    model_systems: torch.Tensor | None = field(init=False)

    def __post_init__(self) -> None:
        self.factual_std = self.context.standardizer.transform(self.factual)
        n_systems = getattr(self.model, "n_systems", None)
        whole = (isinstance(n_systems, int) and not isinstance(n_systems, bool) and self.systems.numel() == n_systems
                 and self.systems.tolist() == list(range(n_systems)))
        self.model_systems = None if whole else self.systems

    @property
    def shape(self) -> tuple[int, int, int, int]:
        S, B, d = self.factual.shape
        return S, B, self.settings.n_counterfactuals, d


@dataclass
class SearchBatch:
    """The state an objective term sees at one iteration, restricted to the still-active individuals.

    ``x`` and ``x_std`` are the (projected) candidates in feature and standardised space, (S, B', K, d);
    ``log_p`` (S, B', K) is log p(y=1); ``all_valid`` (S, B') says every copy has p >= 0.5; ``index`` (B',)
    maps the active columns to the problem's individuals, for terms with per-individual prepared data;
    ``factual_std`` (S, B', d) are their factuals in the search space (gathered from the problem if not given;
    the engine passes the working batch's, gathered once per compaction instead of once per term and step).
    """

    problem: SearchProblem
    x: torch.Tensor
    x_std: torch.Tensor
    log_p: torch.Tensor
    all_valid: torch.Tensor
    index: torch.Tensor
    active_factual_std: torch.Tensor | None = None

    @property
    def factual_std(self) -> torch.Tensor:
        if self.active_factual_std is not None:
            return self.active_factual_std
        return self.problem.factual_std[:, self.index]

    @property
    def systems(self) -> torch.Tensor:
        return self.problem.systems


@dataclass
class SearchResult:
    """Counterfactuals (S, B, K, d) in feature space with p(y=1) (S, B, K), per-individual convergence and
    iteration counts (S, B)."""

    counterfactuals: torch.Tensor
    proba: torch.Tensor
    converged: torch.Tensor
    steps: torch.Tensor

    def squeeze_system(self) -> SearchResult:
        """Drop the system axis of a single-system result."""
        return SearchResult(self.counterfactuals[0], self.proba[0], self.converged[0], self.steps[0])
