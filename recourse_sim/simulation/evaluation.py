"""Shift metrics of every system against the round-0 references (Altmeyer et al., SaTML 2023, Sec. 4).

All comparisons are with the *initial* model and data, as in AlgorithmicRecourseDynamics.jl v0.1.2:
domain MMD of the initial positives (train + test) vs each system's current positives; model MMD of the
initial vs current predicted probabilities on all initial points and on a fixed random grid; parameter
perturbation, disagreement and decisiveness vs the initial model; accuracy and F1 on the untouched test set.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from recourse_sim.metrics import (
    accuracy,
    decisiveness,
    disagreement,
    f1_score,
    grid_points,
    mmd2_unbiased,
    mmd_permutation_test,
    perturbation,
)
from recourse_sim.models.classifier import TorchClassifier
from recourse_sim.simulation.config import MetricSettings
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
        generator: torch.Generator,
    ) -> None:
        self.settings = settings
        self.generator = generator
        self.X_initial = X_initial
        self.initial_positives = X_initial[y_initial == 1]
        self.X_test, self.y_test = X_test, y_test
        self.grid = grid_points(X_initial, settings.grid_points, generator=generator)
        self._reference: dict[str, dict[str, torch.Tensor | list[torch.Tensor]]] = {}
        self._previous_params: dict[str, list[torch.Tensor]] = {}

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

    def _two_sample(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        s = self.settings
        if s.permutations == 0:
            return float(mmd2_unbiased(x, y, length_scale=s.length_scale)), math.nan
        # Reference code (mmd.jl): both sides are subsampled to min(|x|, n_samples) rows.
        test = mmd_permutation_test(
            x, y, n_permutations=s.permutations, length_scale=s.length_scale,
            max_samples=min(len(x), s.mmd_samples), generator=self.generator,
        )
        return test.mmd2, test.p_value

    def evaluate(
        self, name: str, model: TorchClassifier, population: Population, systems: torch.Tensor
    ) -> Iterator[tuple[int, str, float]]:
        """Yield ``(global system index, metric, value)`` for the stack ``name`` holding ``systems``."""
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
        self._previous_params[name] = [p.clone() for p in params]
        for local, system in enumerate(systems.tolist()):
            for metric, values in per_system.items():
                yield system, metric, float(values[local])
            positives = population.X[system][population.y[system] == 1]
            tests = {
                "domain_mmd": (self.initial_positives, positives),
                "model_mmd": (ref["p_initial"][local], p_now[local]),
                "model_mmd_grid": (ref["p_grid"][local], p_grid[local]),
            }
            for metric, (a, b) in tests.items():
                if len(b) < 2:  # e.g. every positive moved away: no distribution to compare
                    value, p_value = math.nan, math.nan
                else:
                    value, p_value = self._two_sample(a, b)
                yield system, metric, value
                yield system, f"{metric}_pvalue", p_value
