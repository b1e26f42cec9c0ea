"""Shift metrics of every system against the round-0 references (Altmeyer et al., SaTML 2023, Sec. 4).

Model comparisons are with the *initial* model, as in AlgorithmicRecourseDynamics.jl v0.1.2: model MMD of the
initial vs current predicted probabilities on all initial points and on a fixed random grid; parameter
perturbation, disagreement and decisiveness vs the initial model; accuracy and F1 on the untouched test set.

Domain shift compares each system's current training positives with the never-moved held-out positives by
default (a valid two-sample test, see :class:`MetricSettings`); ``domain_reference = "initial"`` restores the
reference code's initial positives (train + test) as the reference.

With ``metrics.faithfulness`` on, :class:`FaithfulnessEvaluator` adds the ECCCo / Counterfactual Training metrics
(:mod:`recourse_sim.metrics.faithfulness`) to every evaluated round's rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from recourse_sim.generators.problem import SearchContext, SearchSettings
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.metrics import (
    accuracy,
    decisiveness,
    disagreement,
    f1_score,
    grid_points,
    median_length_scale,
    mmd2_unbiased,
    perturbation,
)
from recourse_sim.metrics.mmd import mmd_permutation_tests
from recourse_sim.models.classifier import TorchClassifier
from recourse_sim.simulation.config import MetricSettings
from recourse_sim.simulation.faithfulness import FaithfulnessEvaluator
from recourse_sim.simulation.population import Population


class ShiftEvaluator:
    """Holds the round-0 references and computes every system's shift metrics on demand."""

    def __init__(
        self,
        X_initial: torch.Tensor,
        y_initial: torch.Tensor,
        X_test: torch.Tensor,
        y_test: torch.Tensor,
        settings: MetricSettings,
        rng: torch.Generator,
    ) -> None:
        self.settings = settings
        self.rng = rng
        self.X_initial = X_initial
        self.X_test, self.y_test = X_test, y_test
        # The domain test runs in float64: with a short length-scale a 29-D float32 kernel underflows to its floor
        # and every p-value is 1.
        initial_positives = X_initial[y_initial == 1].double()
        held_out = settings.domain_reference == "held_out"
        self.domain_reference = X_test[y_test == 1].double() if held_out else initial_positives
        self.domain_length_scale = (
            median_length_scale(initial_positives, settings.mmd_samples, rng)
            if settings.domain_length_scale == "median" else float(settings.domain_length_scale)
        )
        self.grid = grid_points(X_initial, settings.grid_points, rng=rng)
        self._reference: dict[str, dict[str, torch.Tensor | list[torch.Tensor]]] = {}
        self._previous_params: dict[str, list[torch.Tensor]] = {}
        self.faithfulness = (
            FaithfulnessEvaluator(X_initial, y_initial, X_test, y_test, settings, self.domain_length_scale, rng)
            if settings.faithfulness else None
        )

    def set_reference(self, name: str, model: TorchClassifier) -> None:
        """Freeze the round-0 state of a model stack (probabilities, parameters, test F1)."""
        p_initial = model.proba_positive(self.X_initial)
        self._reference[name] = {
            "p_initial": p_initial,
            "p_grid": model.proba_positive(self.grid),
            "params": [p.clone() for p in model.parameters_stacked()],
            "f1": f1_score(self.y_test, model.predict(self.X_test)),
        }
        self._previous_params[name] = self._reference[name]["params"]

    def remember_parameters(self, name: str, model: TorchClassifier) -> None:
        """Keep the stack's current parameters as theta_{t-1} for the paper's perturbation at the next evaluation
        (``definitions = "paper"``: ||theta_t - theta_{t-1}||^2 between consecutive *rounds*)."""
        self._previous_params[name] = [p.clone() for p in model.parameters_stacked()]

    def _two_sample(
        self, xs: list[torch.Tensor], ys: list[torch.Tensor], length_scale: float, cap_to_x: bool = True
    ) -> list[tuple[float, float]]:
        """MMD^2 and p-value of each pair ``(xs[s], ys[s])``; the permutation tests of all pairs in one batched call
        (:func:`~recourse_sim.metrics.mmd.mmd_permutation_tests`: per pair the same draws, in order, as one call
        per pair)."""
        s = self.settings
        out: list[tuple[float, float] | None] = [None] * len(xs)
        testable = []
        for i, (x, y) in enumerate(zip(xs, ys)):
            if len(x) < 2 or len(y) < 2:  # e.g. every positive moved away: no distribution to compare
                out[i] = (math.nan, math.nan)
            elif s.permutations == 0:
                out[i] = (float(mmd2_unbiased(x, y, length_scale=length_scale)), math.nan)
            else:
                testable.append(i)
        if testable:
            # Reference code (mmd.jl): both sides are subsampled to min(|x|, n_samples) rows. The held-out domain
            # test caps each side on its own: its reference (the test positives) is smaller than the training
            # positives. (Every x of one call has the same length.)
            cap = min(len(xs[testable[0]]), s.mmd_samples) if cap_to_x else s.mmd_samples
            tests = mmd_permutation_tests(
                [xs[i] for i in testable], [ys[i] for i in testable], n_permutations=s.permutations,
                length_scale=length_scale, max_samples=cap, rng=self.rng,
            )
            for i, test in zip(testable, tests):
                out[i] = (test.mmd2, test.p_value)
        return out

    def evaluate(
        self,
        name: str,
        model: TorchClassifier,
        population: Population,
        systems: torch.Tensor,
        generators: Sequence[GeneratorSpec] = (),
        context: SearchContext | None = None,
        search_settings: SearchSettings | None = None,
    ) -> Iterator[tuple[int, str, float]]:
        """Yield ``(global system index, metric, value)`` for the stack ``name`` holding ``systems``.

        ``generators`` (one per system of the stack), ``context`` and ``search_settings`` are the run's search;
        only the faithfulness metrics use them (to rerun the search with protected features).
        """
        ref = self._reference[name]
        p_now = model.proba_positive(self.X_initial)
        p_grid = model.proba_positive(self.grid)
        predictions = model.predict(self.X_test)
        params = model.parameters_stacked()
        paper = self.settings.definitions == "paper"
        reference_params = self._previous_params[name] if paper else ref["params"]
        per_system = {
            "perturbation": perturbation(params, reference_params, definition=self.settings.definitions, stacked=True),
            "disagreement": disagreement(ref["p_initial"], p_now),
            "decisiveness": decisiveness(ref["p_initial"], p_now, definition=self.settings.definitions),
            "accuracy": accuracy(self.y_test, predictions),
            "f1": f1_score(self.y_test, predictions),
        }
        per_system["f1_change"] = per_system["f1"] - ref["f1"]
        local_systems = systems.tolist()
        # Each test family runs batched over the stack's systems; rows are yielded system by system as before.
        tests = {
            "domain_mmd": self._domain_shifts(
                [population.X[system][population.y[system] == 1] for system in local_systems]
            ),
            "model_mmd": self._two_sample(
                list(ref["p_initial"].unbind(0)), list(p_now.unbind(0)), self.settings.length_scale
            ),
            "model_mmd_grid": self._two_sample(
                list(ref["p_grid"].unbind(0)), list(p_grid.unbind(0)), self.settings.length_scale
            ),
        }
        faithful = {}
        if self.faithfulness is not None:
            if context is None or len(generators) != len(local_systems):
                raise ValueError("the faithfulness metrics need the stack's generators and the search context")
            faithful = self.faithfulness.evaluate(name, model, population, systems, generators, context,
                                                  search_settings or SearchSettings())
        for local, system in enumerate(local_systems):
            for metric, values in per_system.items():
                yield system, metric, float(values[local])
            for metric, results in tests.items():
                value, p_value = results[local]
                yield system, metric, value
                yield system, f"{metric}_pvalue", p_value
            for metric, values in faithful.items():
                yield system, metric, float(values[local])

    def domain_shift(self, positives: torch.Tensor) -> tuple[float, float]:
        """MMD^2 and permutation p-value of a system's current positives against the domain reference (the
        held-out positives by default; see :class:`MetricSettings`)."""
        return self._domain_shifts([positives])[0]

    def _domain_shifts(self, positives: list[torch.Tensor]) -> list[tuple[float, float]]:
        cap_to_reference = self.settings.domain_reference == "initial"  # the reference code's subsampling
        return self._two_sample([self.domain_reference] * len(positives), [p.double() for p in positives],
                                self.domain_length_scale, cap_to_reference)
