"""Counterfactual Training (CT; Altmeyer, Buszydlik, van Deursen, Liem, IEEE SaTML 2026) of any stacked package
classifier: a model-side mitigation the simulation retrains with at every round.

:class:`CounterfactualTraining` wraps a package classifier (an MLP, a deep ensemble, logistic regression or a
:class:`~recourse_sim.models.custom.ModuleClassifier`) and keeps its scikit-learn style contract (``fit`` on
(n, d) or (S, n, d), ``refit`` warm start, ``select_systems``, ``log_proba_stacked``, ``predict``...), so the
simulation uses it unchanged. ``fit`` and ``refit`` train the wrapped model's parameters on the CT objective
(:mod:`~recourse_sim.training.objective`) with the wrapped model's own training settings: epochs, batch sizes,
learning rate (Adam, a fresh state per call as in the reference code), shuffling and seed.

Per epoch (CounterfactualTraining.jl ``src/training.jl::counterfactual_training``):

1. during burn-in (the first ``burn_in`` share of the call's epochs) plain cross-entropy;
2. otherwise one batched engine call for every system of the stack generates the epoch's counterfactual tuples
   (:func:`~recourse_sim.training.counterfactuals.sample_tuples`: n_CE factuals, targets, ECCo search with the
   data's feature constraints, nascent adversarial examples, fallback of immature counterfactuals to x+,
   protection of immutable features in x+);
3. the tuples are split evenly across the epoch's mini-batches and every mini-batch takes one Adam step on
   ``lambda_clf yloss + lambda_div div + lambda_adv advloss + lambda_reg ridge``.

The search needs the simulation's search context (standardiser and feature constraints): the simulation hands it
over with :meth:`CounterfactualTraining.use_search_context` before ``fit``. Without one, ``fit`` standardises on
its first system's data and applies no constraints.

Cost (``benchmarks/ct_cost.py``, ``benchmarks/results/ct_cost_cpu.md``): a CT round of the default scenario's MLP
(800 rows, batch size 1, 10 epochs = 8,000 Adam steps) took 7.9 s for one system and 8.6 s for the scenario's
stack of five, against 0.002-0.009 s for conventional retraining (the package's compiled loop) and 1.3-1.8 s for
its stepwise torch loop: CT's objective needs autograd (about 0.5 ms a step on one CPU thread, of which the epoch's
batched search is 2-4 %). At the CT paper's batch size 30 a round costs 0.4-0.7 s. An initial fit is 100 epochs.
A model with dropout (the paper's real-data MLP: (64, 64), dropout 0.1) trains with it: every CT forward pass of a
mini-batch draws fresh masks (from the model's own stream, as its stepwise torch loop does), while the epoch's
counterfactual search and every prediction use the inference pass without dropout.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from recourse_sim.data.dataset import Standardizer
from recourse_sim.data.schema import FeatureSchema
from recourse_sim.device import flush_denormals
from recourse_sim.errors import ConfigError, DataError
from recourse_sim.generators.constraints import FeatureConstraints
from recourse_sim.generators.problem import SearchContext
from recourse_sim.models.base import DECISION_THRESHOLD, StackedClassifier
from recourse_sim.settings import check_value, parameter_names, require, type_hints, unknown_key
from recourse_sim.training.counterfactuals import Tuples, ecco_spec, sample_tuples, tuple_chunks
from recourse_sim.training.objective import Objective, Terms, Weights, terms
from recourse_sim.training.parameters import SUPPORTED, TrainableClassifier, trainable


class CounterfactualTraining(StackedClassifier):
    """A package classifier trained with Counterfactual Training (see the module docstring).

    Parameters
    ----------
    Defaults are the CT paper's (``paper/satml``, appendix note "Training Phase") and CounterfactualTraining.jl's.

    model:
        The classifier to train (unfitted; its settings are used, its seed and device are replaced by these).
    objective:
        ``"full"`` or an ablation: ``"cd"`` (no adversarial term), ``"ar"`` (no div/ridge), ``"baseline"``
        (cross-entropy only, no search: the conventionally trained model).
    lambda_clf, lambda_div, lambda_adv, lambda_reg:
        1, 0.5, 0.25, 0.1: divergence weighs twice the adversarial loss; the final per-dataset runs tune
        lambda_reg in {0.01, ..., 0.5} (too little lets the logits explode).
    n_counterfactuals:
        n_CE = 1000 factuals per epoch, drawn without replacement (at most the n training rows, at least one per
        mini-batch, as the reference raises it).
    burn_in:
        Share of a training call's epochs trained on cross-entropy only before CT starts (0; 0.5 is the paper's
        "CT fine-tuning", which works as well).
    epsilon:
        0.3: the nascent adversarial example is the last iterate within this L-infinity distance of the factual
        (``NormBound(epsilon=0.3, p=Inf)``, the code default; the paper gives no value), in the standardised
        search space.
    search_threshold, search_steps, search_step_size, lambda_cost:
        The ECCo generator: tau = 0.5, T = 30, ``Descent(0.25)``, lambda_cst = 0.001 (L1 distance). tau is the
        final runs' value on 7 of the 9 datasets (``tbl-final-params``; the generator's own default is 0.75): "tau =
        0.5 is usually best, because more counterfactuals mature". Measured here on 2-D data, tau = 0.75 left
        0-17 % of the searches mature during training (div is then 0 for the rest), tau = 0.5 34-100 %.
    lambda_energy:
        0.06: the energy weight of the search. ECCo weighs ``-logit_y+(x')`` by ``lambda_egy phi_t`` with
        lambda_egy = 5.0 and the SGLD-style decay ``phi_t = 0.1 (1 + t)^-0.9`` (T = 30: 0.054 -> 0.005); the
        package's energy term has no decay (its terms do not see the step), so CT uses the schedule's mean over the
        30 steps, 5.0 x 0.0123 = 0.06, as a constant (and omits the energy's 1e-3 ridge).
    device, seed:
        Passed to the wrapped model; ``seed`` also seeds CT's own draws (factuals, positive samples, the search).
    """

    def __init__(
        self,
        model: StackedClassifier,
        objective: Objective = "full",
        lambda_clf: float = 1.0,
        lambda_div: float = 0.5,
        lambda_adv: float = 0.25,
        lambda_reg: float = 0.1,
        n_counterfactuals: int = 1000,
        burn_in: float = 0.0,
        epsilon: float = 0.3,
        search_threshold: float = DECISION_THRESHOLD,  # tau = 0.5, the final runs' value on 7 of 9 datasets
        search_steps: int = 30,
        search_step_size: float = 0.25,
        lambda_cost: float = 0.001,
        lambda_energy: float = 0.06,
        device: str = "auto",
        seed: int | None = None,
        **unknown: object,
    ) -> None:
        if unknown:  # one package error instead of Python's TypeError
            key = next(iter(unknown))
            raise unknown_key(f"{FIELD}.{key}", key, [n for n in parameter_names(CounterfactualTraining) if n != "model"])
        self.model = model
        self.objective = objective
        self.lambda_clf = lambda_clf
        self.lambda_div = lambda_div
        self.lambda_adv = lambda_adv
        self.lambda_reg = lambda_reg
        self.n_counterfactuals = n_counterfactuals
        self.burn_in = burn_in
        self.epsilon = epsilon
        self.search_threshold = search_threshold
        self.search_steps = search_steps
        self.search_step_size = search_step_size
        self.lambda_cost = lambda_cost
        self.lambda_energy = lambda_energy
        self.device = device
        self.seed = seed
        self._check_params()

    def _check_params(self) -> None:
        if not isinstance(self.model, SUPPORTED):
            raise ConfigError(FIELD, type(self.model).__name__,
                              "a TorchClassifier (logistic_regression, mlp, deep_ensemble) or a ModuleClassifier")
        hints = type_hints(CounterfactualTraining.__init__)
        for name, value in self.get_params().items():
            if name != "model":
                check_value(f"{FIELD}.{name}", value, hints.get(name))
        for name in ("lambda_clf", "lambda_div", "lambda_adv", "lambda_reg", "lambda_cost", "lambda_energy"):
            require(getattr(self, name) >= 0, f"{FIELD}.{name}", getattr(self, name), "a number >= 0")
        require(self.n_counterfactuals >= 1, f"{FIELD}.n_counterfactuals", self.n_counterfactuals, "an integer >= 1")
        require(0.0 <= self.burn_in <= 1.0, f"{FIELD}.burn_in", self.burn_in, "a share in [0, 1]")
        require(self.epsilon > 0, f"{FIELD}.epsilon", self.epsilon, "a number > 0 (an L-infinity radius)")
        require(0.0 < self.search_threshold < 1.0, f"{FIELD}.search_threshold", self.search_threshold,
                "a probability in (0, 1)")
        require(self.search_steps >= 1, f"{FIELD}.search_steps", self.search_steps, "an integer >= 1")
        require(self.search_step_size > 0, f"{FIELD}.search_step_size", self.search_step_size, "a number > 0")

    def __repr__(self) -> str:
        return f"CounterfactualTraining({type(self.model).__name__}, objective={self.objective!r})"

    @property
    def weights(self) -> Weights:
        """The objective's lambdas after its ablation."""
        return Weights.of(self.objective, self.lambda_clf, self.lambda_div, self.lambda_adv, self.lambda_reg)

    def use_search_context(self, context: SearchContext) -> CounterfactualTraining:
        """The standardiser and feature constraints the searches use: the simulation hands over its own before
        ``fit``. (Not a constructor parameter: it holds tensors of the run's data, not a setting.)"""
        self.search_context = context
        return self

    # ----------------------------------------------------------------------------------------- fitting
    def fit(self, X: torch.Tensor, y: torch.Tensor) -> CounterfactualTraining:
        """Fresh weights for the wrapped model (drawn as its own ``fit`` draws them), then ``model.epochs`` of CT
        at ``model.batch_size``."""
        X_stack, y_stack, stacked = self._as_stack(X, y)
        inner = type(self.model)(**(self.model.get_params() | {"device": self.device, "seed": self.seed}))
        epochs = inner.epochs
        inner.epochs = 0  # its own fit with no epochs: initial weights and random state only, no training
        try:
            inner.fit(X, y)
        finally:
            inner.epochs = epochs
        self.model_ = inner
        self.device_ = inner.device_
        self.n_features_in_ = inner.n_features_in_
        self.rng_ = self._ct_rng()
        # A Python user without a simulation: standardised on the fit data, no constraints.
        context = getattr(self, "search_context", None)
        self.context_ = _default_context(X_stack[0], self.device_) if context is None else context
        self._train(X_stack, y_stack, epochs, inner.batch_size)
        self.stacked_ = stacked
        return self

    def refit(self, X: torch.Tensor, y: torch.Tensor, epochs: int | None = None) -> CounterfactualTraining:
        """Warm-start CT on the (moved) data: ``model.retrain_epochs`` at ``model.retrain_batch_size``."""
        self._check_fitted()
        X, y, _ = self._as_stack(X, y)
        inner = self.model_
        self._train(X, y, inner.retrain_epochs if epochs is None else epochs, inner.retrain_batch_size)
        return self

    def _ct_rng(self) -> torch.Generator:
        """CT's own CPU stream (factuals, positive samples, search seeds), apart from the wrapped model's, which
        keeps drawing exactly what its conventional training would (its shuffles)."""
        rng = torch.Generator()
        if self.seed is None:
            rng.seed()
        else:
            rng.manual_seed(int(np.random.SeedSequence(self.seed, spawn_key=(13,)).generate_state(1, np.uint64)[0]
                                % 2**62))
        return rng

    @flush_denormals()
    def _train(self, X: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int) -> None:
        inner = self.model_
        if X.shape[0] != inner.n_systems:
            raise DataError(f"model holds {inner.n_systems} systems but got data for {X.shape[0]}")
        X, y = X.to(self.device_), y.to(self.device_)
        S, n, _ = X.shape
        view = trainable(inner)
        weights = self.weights
        starts = range(0, n, batch_size)
        n_ce = max(min(self.n_counterfactuals, n), len(starts))
        chunks = tuple_chunks(n_ce, len(starts))
        burn_in = math.floor(self.burn_in * epochs)
        spec = ecco_spec(self.search_threshold, self.search_steps, self.search_step_size, self.lambda_cost,
                         self.lambda_energy)
        converged, ct_epochs = torch.zeros(S, device=self.device_), 0
        with view.session(inner.learning_rate) as session:
            for epoch in range(epochs):
                # the wrapped model's own draw, in its own order: its conventional shuffle
                order = torch.randperm(n, generator=inner.rng_, device=inner.rng_.device).to(X.device) \
                    if inner.shuffle else None
                tuples = None
                if weights.needs_counterfactuals and epoch >= burn_in:
                    with session.evaluation():
                        tuples = sample_tuples(view, X, y, n_ce, spec, self.context_, self.epsilon, self.rng_)
                    converged += tuples.converged.float().mean(1)
                    ct_epochs += 1
                for b, start in enumerate(starts):
                    stop = min(start + batch_size, n)
                    rows = slice(start, stop) if order is None else order[start:stop]
                    part = None if tuples is None else tuples[chunks[b]]
                    session.step(batch_terms(view, X[:, rows], y[:, rows], part).loss(weights))
        self.last_training_ = {"epochs": epochs, "ct_epochs": ct_epochs, "n_counterfactuals": n_ce if ct_epochs else 0,
                               "converged_share": (converged / max(ct_epochs, 1)).tolist()}

    # -------------------------------------------------------------------------------------- objective
    def objective_terms(self, X: torch.Tensor, y: torch.Tensor, tuples: Tuples | None = None) -> Terms:
        """The CT terms (S, M) of the fitted model on a batch ``X`` (S, n, d) with these counterfactual tuples."""
        self._check_fitted()
        return batch_terms(trainable(self.model_), X.to(self.device_), y.to(self.device_), tuples)

    def counterfactual_tuples(self, X: torch.Tensor, y: torch.Tensor, observe=None) -> Tuples:
        """One epoch's tuples for data ``X`` (S, n, d) as training would draw them next (advances CT's stream)."""
        self._check_fitted()
        X, y, _ = self._as_stack(X, y)
        n_ce = min(self.n_counterfactuals, X.shape[1])
        spec = ecco_spec(self.search_threshold, self.search_steps, self.search_step_size, self.lambda_cost,
                         self.lambda_energy)
        return sample_tuples(trainable(self.model_), X.to(self.device_), y.to(self.device_), n_ce, spec,
                             self.context_, self.epsilon, self.rng_, observe)

    # ---------------------------------------------------------------------------------------- inference
    @property
    def n_systems(self) -> int:
        self._check_fitted()
        return self.model_.n_systems

    def log_proba_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        return self.model_.log_proba_stacked(X, systems)

    def logits_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        return self.model_.logits_stacked(X, systems)

    def parameters_stacked(self) -> list[torch.Tensor]:
        return self.model_.parameters_stacked()

    def _take_systems(self, new: CounterfactualTraining, index: torch.Tensor) -> None:
        new.model_ = self.model_.select_systems(index)


#: How CT's settings are named in errors: the ``training`` table of a scenario's model.
FIELD = "model.training"


def batch_terms(view: TrainableClassifier, X: torch.Tensor, y: torch.Tensor, tuples: Tuples | None) -> Terms:
    """The CT terms of one mini-batch: one forward pass over the batch rows and the tuples' x+, x'_CE, x'_AE."""
    if tuples is None or tuples.size == 0:
        return terms(view.member_logits(X), y)
    n, k = X.shape[1], tuples.size
    f = view.member_logits(torch.cat([X, tuples.x_plus, tuples.x_ce, tuples.x_ae], dim=1))
    f_x, f_plus, f_ce, f_ae = f.split([n, k, k, k], dim=-1)
    return terms(f_x, y, f_plus, f_ce, f_ae, tuples.y_ae, tuples.target)


def _default_context(X: torch.Tensor, device: torch.device) -> SearchContext:
    """Standardised on ``X`` (n, d), every feature free and unbounded."""
    names = tuple(f"x{j}" for j in range(X.shape[-1]))
    return SearchContext(standardizer=Standardizer.fit(X).to(device),
                         constraints=FeatureConstraints.from_schema(FeatureSchema.unconstrained(names), device))

