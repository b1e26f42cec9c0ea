"""Shift metrics of every system against the round-0 references (Altmeyer et al., SaTML 2023, Sec. 4).

Model comparisons are with the *initial* model, as in AlgorithmicRecourseDynamics.jl v0.1.2: model MMD of the
initial vs current predicted probabilities on all initial points and on a fixed random grid; parameter
perturbation, disagreement and decisiveness vs the initial model; accuracy and F1 on the untouched test set.

Domain shift compares each system's current training positives with the never-moved held-out positives by
default (a valid two-sample test, see :class:`MetricSettings`); ``domain_reference = "initial"`` restores the
reference code's initial positives (train + test) as the reference.
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
    median_length_scale,
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
        self.X_test, self.y_test = X_test, y_test
        # The domain test runs in float64: with a short length-scale a 29-D float32 kernel underflows to its floor
        # and every p-value is 1.
        initial_positives = X_initial[y_initial == 1].double()
        held_out = settings.domain_reference == "held_out"
        self.domain_reference = X_test[y_test == 1].double() if held_out else initial_positives
        self.domain_length_scale = (
            median_length_scale(initial_positives, settings.mmd_samples, generator)
            if settings.domain_length_scale == "median" else float(settings.domain_length_scale)
        )
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

    def remember_parameters(self, name: str, model: TorchClassifier) -> None:
        """Keep the stack's current parameters as theta_{t-1} for the paper's perturbation at the next evaluation
        (``definitions = "paper"``: ||theta_t - theta_{t-1}||^2 between consecutive *rounds*)."""
        self._previous_params[name] = [p.clone() for p in model.parameters_stacked()]

    def _two_sample(self, x: torch.Tensor, y: torch.Tensor, length_scale: float, cap_to_x: bool = True) -> tuple[float, float]:
        s = self.settings
        if len(x) < 2 or len(y) < 2:  # e.g. every positive moved away: no distribution to compare
            return math.nan, math.nan
        if s.permutations == 0:
            return float(mmd2_unbiased(x, y, length_scale=length_scale)), math.nan
        # Reference code (mmd.jl): both sides are subsampled to min(|x|, n_samples) rows. The held-out domain test
        # caps each side on its own: its reference (the test positives) is smaller than the training positives.
        test = mmd_permutation_test(
            x, y, n_permutations=s.permutations, length_scale=length_scale,
            max_samples=min(len(x), s.mmd_samples) if cap_to_x else s.mmd_samples, generator=self.generator,
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
        for local, system in enumerate(systems.tolist()):
            for metric, values in per_system.items():
                yield system, metric, float(values[local])
            tests = {
                "domain_mmd": self.domain_shift(population.X[system][population.y[system] == 1]),
                "model_mmd": self._two_sample(ref["p_initial"][local], p_now[local], self.settings.length_scale),
                "model_mmd_grid": self._two_sample(ref["p_grid"][local], p_grid[local], self.settings.length_scale),
            }
            for metric, (value, p_value) in tests.items():
                yield system, metric, value
                yield system, f"{metric}_pvalue", p_value

    def domain_shift(self, positives: torch.Tensor) -> tuple[float, float]:
        """MMD^2 and permutation p-value of a system's current positives against the domain reference (the
        held-out positives by default; see :class:`MetricSettings`)."""
        cap_to_reference = self.settings.domain_reference == "initial"  # the reference code's subsampling
        return self._two_sample(self.domain_reference, positives.double(), self.domain_length_scale, cap_to_reference)
