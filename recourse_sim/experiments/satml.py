"""Reproduction of Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse" (IEEE SaTML 2023).

One scenario per experiment (dataset) lives in ``recourse_sim/scenarios/satml/`` (copies in
``scenarios/satml/``): models {logistic regression, MLP, deep ensemble} x generators {generic, greedy, REVISE,
DiCE, generic with gamma = 0.9, gravitational, ClaPROAR} x 5 repetitions x 50 rounds. ``quick`` shrinks
rounds, repetitions and sample sizes so the whole grid finishes in minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from recourse_sim.errors import ConfigError
from recourse_sim.experiments.grid import Sweep
from recourse_sim.experiments.scenario import Scenario
from recourse_sim.scenarios import SATML_REAL, SATML_SYNTHETIC, UNCONSTRAINED_SUFFIX, embedded

SYNTHETIC, REAL = SATML_SYNTHETIC, SATML_REAL
EXPERIMENTS = SYNTHETIC + REAL

#: ``--quick``: 10 rounds, 2 repetitions, 400 synthetic / 800 real samples, metrics every 5 rounds.
QUICK = {"rounds": 10, "repetitions": 2, "metrics": {"evaluate_every": 5, "permutations": 50}}
QUICK_SAMPLES = {"synthetic": 400, "real": 800}


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


def output_dir_default(quick: bool) -> Path:
    return Path("runs") / ("satml_quick" if quick else "satml")


#: Real data first: its cells take several times longer, and the sweeps share one queue of cells.
FAMILIES = {"real": REAL, "synthetic": SYNTHETIC}
#: An ablation beyond the paper: the real experiments without the data cards' actionability constraints (the
#: reference code had none), generic recourse and its control only, to tell whether the constraints or the search
#: budget keep real-data counterfactuals from being valid. Reported as experiment ``<dataset>_unconstrained``.
ABLATIONS = {"real_unconstrained": REAL}
ABLATION_GENERATORS = ("generic", "none")


def satml_sweeps(quick: bool = False, only: Sequence[str] | None = None) -> dict[str, Sweep]:
    """One resumable sweep per data family: the family's scenario with a grid over ``data.name``.

    The experiments of a family differ only in their dataset (checked by the tests against the scenario
    files), so each family is one sweep whose cells are the per-dataset experiments. Returned in queue order
    (:data:`FAMILIES`).
    """
    selected = set(only or EXPERIMENTS)
    sweeps = {}
    for family, names in {**FAMILIES, **ABLATIONS}.items():
        members = [n for n in names if n in selected]
        if not members:
            continue
        raw = satml_scenarios(quick, only=[members[0]])[0].model_dump(mode="json", exclude_none=True)
        raw["name"] = f"satml_{family}" + ("_quick" if quick else "")
        if family in ABLATIONS:
            raw["data"]["constraints"] = False
            raw["generators"] = [g for g in raw["generators"] if g.get("label", g["name"]) in ABLATION_GENERATORS]
        base = Scenario.from_dict(raw, source=f"satml/{family}")
        sweeps[family] = Sweep(base=base, axes={"data.name": members}, source=f"satml/{family}")
    return sweeps


def experiment_name(family: str, dataset: str) -> str:
    """The ``experiment`` label of a family's cell in the combined results table."""
    return dataset + UNCONSTRAINED_SUFFIX if family in ABLATIONS else dataset
