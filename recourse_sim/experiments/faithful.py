"""Faithful first (issue 13): the model side of the endogenous dynamics of recourse.

Models {MLP, JEM (ECCCo's joint energy model), CT-trained MLP (Counterfactual Training)} x generators {generic,
REVISE, ECCCo, gravitational} x the no-recourse control, 50 rounds, 5 repetitions, with the ECCCo / CT metrics
(``[metrics] faithfulness``) every evaluated round. One embedded scenario per data family lives in
``recourse_sim/scenarios/faithful/`` (copies in ``scenarios/faithful/``): ``synthetic.toml`` runs on each of the four
synthetic datasets (a grid over ``data.name``), ``real.toml`` on California Housing. ``quick`` shrinks rounds,
repetitions, samples and the SGLD chains so the whole study finishes in minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from recourse_sim.errors import ConfigError
from recourse_sim.experiments.grid import Sweep
from recourse_sim.experiments.scenario import Scenario
from recourse_sim.scenarios import SATML_SYNTHETIC, embedded

#: The datasets of each family, in queue order (real data first: its cells take longest).
FAMILIES = {"real": ("california_housing",), "synthetic": SATML_SYNTHETIC}
EXPERIMENTS = tuple(name for names in FAMILIES.values() for name in names)

#: ``--quick``: 10 rounds, 2 repetitions, 400 synthetic / 800 real rows, metrics every 5 rounds with 50
#: permutations and short SGLD chains (100 steps instead of ECCCo's 500).
QUICK = {"rounds": 10, "repetitions": 2}
QUICK_METRICS = {"evaluate_every": 5, "permutations": 50, "sgld_steps": 100}
QUICK_SAMPLES = {"synthetic": 400, "real": 800}


def faithful_sweeps(quick: bool = False, only: Sequence[str] | None = None) -> dict[str, Sweep]:
    """One resumable sweep per data family (its embedded scenario with a grid over ``data.name``), validated
    before anything runs; ``only`` restricts the datasets."""
    selected = list(only) if only else list(EXPERIMENTS)
    unknown = [name for name in selected if name not in EXPERIMENTS]
    if unknown:
        raise ConfigError("experiment", unknown[0], f"one of {', '.join(EXPERIMENTS)}")
    sweeps = {}
    for family, names in FAMILIES.items():
        members = [name for name in names if name in selected]
        if not members:
            continue
        raw = Scenario.from_toml(embedded(f"faithful/{family}")).model_dump(mode="json", exclude_none=True)
        raw["name"] = f"faithful_{family}" + ("_quick" if quick else "")
        if quick:
            raw.update(QUICK)
            raw["metrics"] = {**raw["metrics"], **QUICK_METRICS}
            raw["data"]["n_samples"] = QUICK_SAMPLES[family]
        base = Scenario.from_dict(raw, source=f"faithful/{family}")
        sweeps[family] = Sweep(base=base, axes={"data.name": members}, source=f"faithful/{family}")
    return sweeps


def output_dir_default(quick: bool) -> Path:
    return Path("runs") / ("faithful_quick" if quick else "faithful")


def experiment_name(family: str, dataset: str) -> str:
    """The ``experiment`` label of a family's cell in the combined results table: its dataset."""
    return dataset
