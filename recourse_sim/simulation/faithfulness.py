"""The ECCCo / Counterfactual Training metrics of every system, every evaluated round (``metrics.faithfulness``).

Implausibility (to the current and the initial target-class data), IP* and unfaithfulness (to the model's own SGLD
samples) of the implemented counterfactuals, the
conformal set size and uncertainty at them, adversarial accuracy of the current model, and the cost of recourse
with the protected features immutable; the formulas live in :mod:`recourse_sim.metrics.faithfulness`.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from recourse_sim.data.dataset import Standardizer
from recourse_sim.errors import ConfigError
from recourse_sim.generators.constraints import FeatureConstraints
from recourse_sim.generators.engine import search
from recourse_sim.generators.problem import SearchContext, SearchSettings
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.metrics.catalogue import ROBUSTNESS_ATTACKS, ROBUSTNESS_EPSILONS, robustness_metric
from recourse_sim.metrics.faithfulness import (
    adversarial_accuracy, conformal_threshold, ip_star, mean_implausibility, set_size, uncertainty,
    unfaithfulness, valid_recourse_cost,
)
from recourse_sim.models.sgld import prior_bounds, sample_conditional
from recourse_sim.models.classifier import TorchClassifier
from recourse_sim.simulation.config import MetricSettings
from recourse_sim.simulation.population import Population


class FaithfulnessEvaluator:
    """The ``metrics.faithfulness`` metrics of every system (see :class:`MetricSettings` and
    :mod:`recourse_sim.metrics.faithfulness`).

    ``X_initial``/``y_initial`` are the initial training rows followed by the test rows (as the simulation builds
    them): the first ``n`` rows, ``n`` the population's size, are the t = 0 training data. ``length_scale`` is the
    domain test's (the median heuristic on the initial positives by default) and serves IP*, so IP* and the domain
    shift weigh distances alike (the CT paper states 0.5, its code's default is 5.0). Each model stack's metrics draw
    from their own generator, spawned from ``rng``'s seed and the stack's name without drawing from ``rng``: the other
    metrics' draws do not change, and adding, removing or reordering a stack leaves another stack's metric noise as
    it was.
    """

    def __init__(
        self,
        X_initial: torch.Tensor,
        y_initial: torch.Tensor,
        X_test: torch.Tensor,
        y_test: torch.Tensor,
        settings: MetricSettings,
        length_scale: float,
        rng: torch.Generator,
    ) -> None:
        self.settings = settings
        self.X_initial, self.y_initial = X_initial, y_initial
        self.X_test, self.y_test = X_test, y_test
        self.target_test = X_test[y_test == 1].double()  # never moves: IP*'s target-class sample
        self.length_scale = length_scale
        self._base_seed, self._device = rng.initial_seed(), rng.device
        self._rngs: dict[str, torch.Generator] = {}
        self._protected: torch.Tensor | None = None

    def stream(self, name: str) -> torch.Generator:
        """The metric stream of the model stack ``name``: ``SeedSequence(seed, spawn_key=(1, crc32(name)))``, one
        per stack for the whole run (a stable hash: Python's ``hash`` of a string changes between processes)."""
        if name not in self._rngs:
            key = (1, zlib.crc32(name.encode()))
            seed = np.random.SeedSequence(self._base_seed, spawn_key=key).generate_state(1, np.uint64)[0]
            self._rngs[name] = torch.Generator(device=self._device).manual_seed(int(seed) >> 1)
        return self._rngs[name]

    def evaluate(
        self,
        name: str,
        model: TorchClassifier,
        population: Population,
        systems: torch.Tensor,
        generators: Sequence[GeneratorSpec],
        context: SearchContext,
        search_settings: SearchSettings,
    ) -> dict[str, torch.Tensor]:
        """Every faithfulness metric of the stack ``name``'s systems, ``{metric: (S,)}`` in catalogue order."""
        rng = self.stream(name)
        X, y = population.X[systems], population.y[systems]
        n = X.shape[1]
        X0, y0 = self.X_initial[:n], self.y_initial[:n]
        # The implemented counterfactuals: everyone who implemented recourse so far, where they are now.
        rows, implemented = _selected_rows(population.recourse_round[systems] >= 1)
        points = _gather_rows(X, rows)
        out = {
            "implausibility": mean_implausibility(points, X, y == 1, mask=implemented, exclude=rows),
            "implausibility_initial": mean_implausibility(points, X0, y0 == 1, mask=implemented),
            "ip_star": self._ip_star(points, implemented, rng),
            "unfaithfulness": unfaithfulness(points, self._model_samples(model, X0, rng), mask=implemented),
        }
        p_points = model.proba_positive(points)
        q_hat = (conformal_threshold(model.proba_positive(self.X_test), self.y_test)
                 if self.settings.conformal_calibration == "held_out" else
                 conformal_threshold(model.proba_positive(X), y))
        out["set_size"] = set_size(p_points, q_hat, mask=implemented)
        out["uncertainty"] = uncertainty(p_points, q_hat, mask=implemented)
        # Radii in standardised units: each feature's standard deviation on the initial training data.
        scale = Standardizer.fit(X0).scale
        for attack in ROBUSTNESS_ATTACKS:
            accuracy_at = adversarial_accuracy(model, self.X_test, self.y_test, ROBUSTNESS_EPSILONS, attack=attack,
                                               scale=scale)
            for eps, values in zip(ROBUSTNESS_EPSILONS, accuracy_at):
                out[robustness_metric(attack, eps)] = values
        out["protected_cost"], out["protected_validity"] = self._protected_recourse(
            model, X, y, generators, context, search_settings, rng)
        return out

    def _model_samples(self, model: TorchClassifier, X0: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Each system's own samples of the target class (S, sgld_keep, d): fresh SGLD chains from ECCCo's prior
        box on the initial training data (fixed for the run, so samples compare across rounds)."""
        s = self.settings
        lo, hi = prior_bounds(X0)
        return sample_conditional(model, 1, s.sgld_chains, s.sgld_steps, (float(lo), float(hi)), rng,
                                  keep_lowest=s.sgld_keep).detach()

    def _ip_star(self, points: torch.Tensor, implemented: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """IP* on at most ``mmd_samples`` implemented counterfactuals per system (drawn without replacement)."""
        S, m, _ = points.shape
        if m < 2 or len(self.target_test) < 2:
            return torch.full((S,), math.nan, dtype=torch.float64, device=points.device)
        if m > self.settings.mmd_samples:
            keys = torch.rand(S, m, generator=rng, device=rng.device).to(points.device)
            keep = torch.where(implemented, keys, 2.0).argsort(1)[:, :self.settings.mmd_samples]
            points, implemented = _gather_rows(points, keep), implemented.gather(1, keep)
        return ip_star(points, self.target_test, length_scale=self.length_scale, mask=implemented)

    def _protected_recourse(
        self,
        model: TorchClassifier,
        X: torch.Tensor,
        y: torch.Tensor,
        generators: Sequence[GeneratorSpec],
        context: SearchContext,
        search_settings: SearchSettings,
        rng: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cost and validity of each system's generator rerun with the protected features immutable, on up to
        ``protected_samples`` individuals its model currently rejects. Evaluation only: nobody moves.

        One uniform key per individual, shared by every system (common random numbers), orders who is sampled,
        so systems rejecting the same individuals sample the same ones.
        """
        S, n, _ = X.shape
        rejected = model.predict(X) == 0
        B = min(self.settings.protected_samples, int(rejected.sum(1).max()))
        nan = torch.full((S,), math.nan, device=X.device)
        if B == 0:
            return nan, nan.clone()
        keys = torch.rand(n, generator=rng, device=rng.device).to(X.device).expand(S, n)
        rows = torch.where(rejected, keys, 2.0).argsort(1)[:, :B]
        sampled = rejected.gather(1, rows)
        factual = _gather_rows(X, rows)
        # The run's context with the protected features immutable and the systems' current data (the
        # population-aware terms). A latent generator's VAE comes from the run's cache: refitting it to the current
        # data here changes nothing the dynamics see, because every round refits the cache (LatentCache.prepare)
        # before its searches.
        protected = dataclasses.replace(context, constraints=self._protect(context), data_X=X, data_y=y)
        result = search(model, factual, list(generators), protected, settings=search_settings, rng=rng)
        cost, valid = valid_recourse_cost(factual, result.counterfactuals, result.proba, mask=sampled)
        acting = torch.tensor([g.moves for g in generators], dtype=torch.bool, device=X.device)
        # The no-recourse control has no generator to rerun: no value, not validity 0.
        return torch.where(acting, cost, nan), torch.where(acting, valid, nan)

    def _protect(self, context: SearchContext) -> FeatureConstraints:
        """The run's constraints with the protected features (see :class:`MetricSettings`) immutable."""
        if self._protected is None:
            self._protected = _protected_columns(self.settings.protected_features, context)
        constraints = context.constraints
        return dataclasses.replace(constraints, immutable=constraints.immutable | self._protected,
                                   active=constraints.active | {"none"})


def _protected_columns(chosen: Sequence[str], context: SearchContext) -> torch.Tensor:
    """(d,) bool: the named features; none named: the data's immutable features, else the first feature (CT
    protects "feature 1" of its 2-D synthetic data). A one-hot group is protected whole: one of its columns
    cannot stay fixed while the group moves."""
    names, constraints = context.feature_names, context.constraints
    if chosen:
        for feature in chosen:
            if feature not in names:
                raise ConfigError("metrics.protected_features", feature, f"a feature of the data: {', '.join(names)}")
        mask = torch.tensor([name in chosen for name in names], dtype=torch.bool, device=constraints.immutable.device)
    elif constraints.immutable.any():
        mask = constraints.immutable.clone()
    else:
        mask = torch.zeros_like(constraints.immutable)
        mask[0] = True
    for group in constraints.groups:
        if mask[group].any():
            mask[group] = True
    return mask


def _selected_rows(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows ``selected`` (S, n) picks, first to last, padded to the largest count: ``rows`` (S, m) and which
    of them are real (S, m)."""
    m = int(selected.sum(1).max()) if selected.numel() else 0
    rows = torch.argsort((~selected).to(torch.uint8), dim=1, stable=True)[:, :m]
    return rows, selected.gather(1, rows)


def _gather_rows(X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``X[s, rows[s]]`` for every system: (S, n, d), (S, m) -> (S, m, d)."""
    return torch.gather(X, 1, rows.unsqueeze(-1).expand(-1, -1, X.shape[-1]))
