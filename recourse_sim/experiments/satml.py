"""Reproduction of Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse" (IEEE SaTML 2023).

One scenario per experiment (dataset) lives in ``recourse_sim/scenarios/satml/`` (copies in
``scenarios/satml/``): models {logistic regression, MLP, deep ensemble} x generators {generic, greedy, REVISE,
DiCE, generic with gamma = 0.9, gravitational, ClaPROAR} x 5 repetitions x 50 rounds. ``quick`` shrinks
rounds, repetitions and sample sizes so the whole grid finishes in minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from recourse_sim.errors import ConfigError
from recourse_sim.experiments.scenario import Scenario
from recourse_sim.scenarios import embedded

SYNTHETIC = ("overlapping", "linearly_separable", "circles", "moons")
REAL = ("give_me_some_credit", "credit_default", "california_housing")
EXPERIMENTS = SYNTHETIC + REAL

#: ``--quick``: 10 rounds, 2 repetitions, 500 synthetic / 1,000 real samples, metrics every 5 rounds.
QUICK = {"rounds": 10, "repetitions": 2, "metrics": {"evaluate_every": 5, "permutations": 50}}
QUICK_SAMPLES = {"synthetic": 500, "real": 1000}


def satml_scenarios(quick: bool = False, only: Sequence[str] | None = None) -> list[Scenario]:
    """The SaTML experiments as validated scenarios (all validated before anything runs)."""
    names = list(only) if only else list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ConfigError("experiment", unknown[0], f"one of {', '.join(EXPERIMENTS)}")
    scenarios = []
    for name in names:
        scenario = Scenario.from_toml(embedded(f"satml/{name}"))
        if quick:
            raw = scenario.model_dump(mode="json", exclude_none=True)
            raw.update({k: v for k, v in QUICK.items() if k != "metrics"})
            raw["metrics"] = {**raw["metrics"], **QUICK["metrics"]}
            raw["data"]["n_samples"] = QUICK_SAMPLES["real" if name in REAL else "synthetic"]
            raw["name"] = f"{scenario.name}_quick"
            scenario = Scenario.from_dict(raw, source=f"satml/{name} (quick)")
        scenarios.append(scenario)
    return scenarios


def experiment_of(scenario_name: str) -> str:
    return scenario_name.removeprefix("satml_").removesuffix("_quick")


def final_round_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean over repetitions of each metric at the final round, one row per experiment x model x generator."""
    last = frame.groupby("experiment")["round"].transform("max")
    final = frame[frame["round"] == last]
    table = final.pivot_table(index=["experiment", "model", "generator"], columns="metric", values="value", aggfunc="mean")
    return table.reset_index()


def output_dir_default(quick: bool) -> Path:
    return Path("runs") / ("satml_quick" if quick else "satml")
