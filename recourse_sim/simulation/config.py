"""Plain-Python description of one simulation experiment (what the Mesa model runs).

The TOML ``Scenario`` (experiments/scenario.py) validates user input and builds this object; Python users
may build it directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from recourse_sim.data.dataset import Dataset
from recourse_sim.errors import ConfigError
from recourse_sim.generators.problem import SearchSettings
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.models.classifier import TorchClassifier
from recourse_sim.settings import check_fields, check_value, require, type_hints
from recourse_sim.simulation.agents import AgentSettings

Definitions = Literal["code", "paper"]
DomainReference = Literal["held_out", "initial"]
Calibration = Literal["held_out", "in_sample"]
Pairing = Literal["repetition", "model"]
LengthScale = float | Literal["median"]

#: The seed of a run when none is given (a scenario's ``seed``, ``RecourseDynamics(seed=...)``).
DEFAULT_SEED = 42


@dataclass(frozen=True)
class MetricSettings:
    """Evaluation settings, the ``[metrics]`` table of a scenario (SaTML 2023 reference code values, except the domain test's two defaults below).

    MMD: Gaussian kernel, at most 1,000 samples per side, 100 permutations; model shift on a grid of 1,000
    points from a 100-step lattice; ``length_scale`` 0.5 (the paper's) for the model-shift tests on predicted
    probabilities. ``definitions`` picks the reference code's metric definitions ("code", default) or the paper
    text's ("paper") where they differ (perturbation, decisiveness). ``permutations=0`` skips the permutation
    tests (p-values reported as NaN).

    Domain shift, where the defaults depart from the reference code because its test is not valid:

    - ``domain_reference = "held_out"`` compares the current training positives with the positives of the
      held-out test set, which never move: two disjoint samples, so under no movement the test's false-positive
      rate is alpha. ``"initial"`` is the reference code's comparison of the initial positives (train + test) with
      the current positives, a set with a subset of itself (p ~ 1 and MMD^2 < 0 under no change): exact
      reproduction only.
    - ``domain_length_scale = "median"``: the median heuristic on the initial positives (fixed for the run, so
      values compare across systems and rounds); a number (the paper: 0.5) fixes it. The domain test runs in
      float64, where a 29-D kernel does not underflow.

    Faithfulness (``faithfulness = true``; off by default, when it costs nothing and changes nothing): at every
    evaluated round, per system, the ECCCo / Counterfactual Training metrics of :mod:`recourse_sim.metrics.faithfulness`
    (names in :data:`~recourse_sim.metrics.catalogue.METRICS`). They draw from their own random stream, so turning
    them on leaves every other metric's value as it was.

    - implausibility (100 nearest target-class rows; against the current and the t = 0 training data), IP* and the
      conformal set size and uncertainty at the implemented counterfactuals: everyone who implemented recourse so
      far (``recourse_round >= 1``), where they are now;
    - ``conformal_calibration = "held_out"``: q̂ from the never-moved held-out test set (split conformal, coverage
      0.95, as ECCCo calibrates on held-out rows); ``"in_sample"``: from the system's current training data, as the
      ECCCo generator's search penalty does here (optimistic);
    - accuracy on the test set under FGSM and PGD (40 steps of 0.01) at the radii
      :data:`~recourse_sim.metrics.catalogue.ROBUSTNESS_EPSILONS`, in standardised feature units;
    - unfaithfulness: the mean distance of the implemented counterfactuals to the current model's own samples of
      the target class, ``sgld_chains`` = 50 SGLD chains of ``sgld_steps`` = 500 steps from ECCCo's prior box on
      the initial data, the ``sgld_keep`` = 25 of lowest energy kept (ECCCo's protocol;
      :func:`recourse_sim.models.sgld.sample_conditional`);
    - the cost and validity of each system's generator rerun on ``protected_samples`` = 100 currently rejected
      individuals (the same draw order in every system) with ``protected_features`` immutable (nobody moves).
      Empty (default): the data's immutable features if it has any, else the first feature (the CT paper protects
      "feature 1" of its 2-D synthetic data); naming a column of a one-hot group protects the whole group.
    """

    evaluate_every: int = 10
    permutations: int = 100
    mmd_samples: int = 1000
    length_scale: float = 0.5
    grid_points: int = 1000
    definitions: Definitions = "code"
    domain_reference: DomainReference = "held_out"
    domain_length_scale: LengthScale = "median"
    faithfulness: bool = False
    conformal_calibration: Calibration = "held_out"
    protected_features: tuple[str, ...] = ()
    protected_samples: int = 100
    sgld_chains: int = 50
    sgld_steps: int = 500
    sgld_keep: int = 25

    def __post_init__(self) -> None:
        check_fields(self, "metrics")
        require(self.evaluate_every >= 1, "metrics.evaluate_every", self.evaluate_every, "an integer >= 1")
        require(self.permutations >= 0, "metrics.permutations", self.permutations,
                "an integer >= 0 (0 skips the permutation tests)")
        require(self.mmd_samples >= 2, "metrics.mmd_samples", self.mmd_samples, "an integer >= 2")
        require(self.length_scale > 0, "metrics.length_scale", self.length_scale, "a number > 0")
        require(self.grid_points >= 2, "metrics.grid_points", self.grid_points, "an integer >= 2")
        scale = self.domain_length_scale
        require(scale == "median" or scale > 0, "metrics.domain_length_scale", scale, "'median' or a number > 0")
        object.__setattr__(self, "protected_features", tuple(self.protected_features))  # a TOML list
        require(len(set(self.protected_features)) == len(self.protected_features), "metrics.protected_features",
                list(self.protected_features), "distinct feature names")
        require(self.protected_samples >= 1, "metrics.protected_samples", self.protected_samples, "an integer >= 1")
        require(self.sgld_chains >= 1, "metrics.sgld_chains", self.sgld_chains, "an integer >= 1")
        require(self.sgld_steps >= 0, "metrics.sgld_steps", self.sgld_steps, "an integer >= 0")
        require(1 <= self.sgld_keep <= self.sgld_chains, "metrics.sgld_keep", self.sgld_keep,
                f"an integer in [1, sgld_chains = {self.sgld_chains}]")


@dataclass(frozen=True)
class SimulationConfig:
    """One experiment: every (model x generator x repetition) system runs on the same data, in lock-step.

    - ``recourse_share`` mu = 0.05 of the candidates (training rows predicted negative by every system of the
      repetition) receive recourse each round, the same individuals for every system (paired comparison);
    - ``pairing = "repetition"`` (the reference code's ``intersect_=true``): the candidates are the rows predicted
      negative by every system of the repetition, across models; ``"model"``: by every system of one model in the
      repetition, so the generators of a model stay paired while models no longer veto each other's candidates
      (on circles, logistic regression's half-plane and the networks' inner disc share almost no one);
    - each chosen individual gets K counterfactuals (``search.n_counterfactuals`` = 5) and implements one at
      random; its label becomes the model's prediction at the counterfactual;
    - each system's classifier is then retrained (warm start, ``model.retrain_epochs`` = 10).

    ``vae`` holds the parameters of the VAE behind latent generators (REVISE, CLUE); empty: ``VAE``'s defaults.
    ``agents`` says how recipients act on recourse and what their label becomes (the defaults: as above).

    The defaults of ``rounds`` (50, the paper's), ``repetitions``, ``recourse_share``, ``pairing`` and ``device``
    are also a scenario's defaults: the scenario schema reads them from here.
    """

    train: Dataset
    test: Dataset
    models: Mapping[str, TorchClassifier]
    generators: Mapping[str, GeneratorSpec]
    rounds: int = 50
    repetitions: int = 1
    recourse_share: float = 0.05
    pairing: Pairing = "repetition"
    search: SearchSettings = field(default_factory=SearchSettings)
    metrics: MetricSettings = field(default_factory=MetricSettings)
    vae: Mapping[str, Any] = field(default_factory=dict)  # VAE(**vae) for latent generators; {}: its defaults
    agents: AgentSettings = field(default_factory=AgentSettings)
    device: str = "auto"

    def __post_init__(self) -> None:
        check_dynamics(self.rounds, self.repetitions, self.recourse_share, self.pairing)
        if not self.models:
            raise ConfigError("models", dict(self.models), "at least one model")
        if not self.generators:
            raise ConfigError("generators", dict(self.generators), "at least one generator")
        if self.train.n_features != self.test.n_features:
            raise ConfigError("test", self.test.n_features, f"{self.train.n_features} features like the train set")
        self.agents.check_data(self.train)
        for feature in self.metrics.protected_features:  # refused before the run, not at its first evaluation
            require(feature in self.train.schema.names, "metrics.protected_features", feature,
                    f"a feature of the data: {', '.join(self.train.schema.names)}")


def check_dynamics(rounds: int, repetitions: int, recourse_share: float, pairing: str) -> None:
    """The range checks of the dynamics' own settings (shared by :class:`SimulationConfig` and the scenario)."""
    hints = type_hints(SimulationConfig)
    for name, value in (("rounds", rounds), ("repetitions", repetitions), ("recourse_share", recourse_share),
                        ("pairing", pairing)):
        check_value(name, value, hints[name])
    require(rounds >= 1, "rounds", rounds, "an integer >= 1")
    require(repetitions >= 1, "repetitions", repetitions, "an integer >= 1")
    require(0.0 < recourse_share <= 1.0, "recourse_share", recourse_share, "a share in (0, 1]")


@dataclass(frozen=True)
class System:
    """One simulated system: a model trained on its own copy of the data, explained by one generator."""

    index: int
    model: str
    generator: str
    repetition: int

    @property
    def label(self) -> str:
        return f"{self.model}/{self.generator}/rep{self.repetition}"
