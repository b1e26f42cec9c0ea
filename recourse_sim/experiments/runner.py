"""Run a scenario end to end: simulate, then write the results table, summary, figures and the resolved
scenario into one output directory (atomically: a failed run leaves nothing behind)."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from recourse_sim.experiments.scenario import Scenario
from recourse_sim.experiments.store import atomic_directory, check_output_dir, write_results, write_text
from recourse_sim.experiments.summary import summarise
from recourse_sim.plotting import plot_population, plot_trajectories
from recourse_sim.simulation.model import RecourseDynamics


@dataclass
class RunResult:
    """The tidy results table (one row per system x round x metric), the final simulation and where it was
    written (None when not written)."""

    results: pd.DataFrame
    dynamics: RecourseDynamics
    out: Path | None
    seconds: float


def run_scenario(scenario: Scenario, out: str | Path | None = None, progress: bool = False) -> RunResult:
    """Simulate ``scenario``; with ``out``, also write its outputs there (see :func:`write_outputs`)."""
    if out is not None:
        check_output_dir(Path(out))  # fail before spending minutes on the simulation
    start = time.perf_counter()
    config = scenario.build()
    dynamics = RecourseDynamics(config, seed=scenario.seed)
    with tqdm(total=config.rounds, desc=scenario.name, unit="round", disable=not progress) as bar:
        results = dynamics.run(progress=bar)
    seconds = time.perf_counter() - start
    run = RunResult(results, dynamics, None, seconds)
    if out is not None:
        run.out = write_outputs(run, scenario, Path(out))
    return run


def write_outputs(run: RunResult, scenario: Scenario, out: Path) -> Path:
    """results.parquet/.csv, summary.csv (mean and 95% CI over repetitions), scenario.toml (resolved),
    run.json (timing and versions), trajectories.png and, for 2-D data, population_<model>.png."""
    with atomic_directory(out) as staging:
        write_results(run.results, staging)
        summarise(run.results).to_csv(staging / "summary.csv", index=False)
        write_text(staging, "scenario.toml", scenario.to_toml())
        write_text(staging, "run.json", json.dumps(_run_info(run), indent=2))
        plot_trajectories(run.results, path=staging / "trajectories.png")
        if run.dynamics.config.train.n_features == 2:
            for model in run.dynamics.config.models:
                plot_population(population_panels(run.dynamics, model), path=staging / f"population_{model}.png",
                                feature_names=run.dynamics.config.train.schema.names)
    return out


def population_panels(dynamics: RecourseDynamics, model: str, repetition: int = 0) -> list[tuple]:
    """Initial population and model, then each generator's final population and model (one repetition)."""
    systems = [s for s in dynamics.systems if s.model == model and s.repetition == repetition]
    pop = dynamics.population
    first = systems[0].index
    panels = [("initial (t = 0)", dynamics.config.train.X.numpy(), dynamics.config.train.y.numpy(), None,
               dynamics.scorer(first, initial=True))]
    for system in systems:
        i = system.index
        panels.append((f"{system.generator} (t = {dynamics.round})", pop.X[i].cpu().numpy(), pop.y[i].cpu().numpy(),
                       (pop.recourse_round[i] >= 0).cpu().numpy(), dynamics.scorer(i)))
    return panels


def _run_info(run: RunResult) -> dict:
    import mesa

    return {
        "seconds": round(run.seconds, 3),
        "rounds": run.dynamics.round,
        "systems": len(run.dynamics.systems),
        "device": str(run.dynamics.device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mesa": mesa.__version__,
        "threads": torch.get_num_threads(),
    }
