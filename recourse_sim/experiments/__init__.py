"""Scenarios (TOML -> typed config), running them, and writing their results."""

from recourse_sim.experiments.runner import RunResult, run_scenario, write_outputs
from recourse_sim.experiments.scenario import Scenario
from recourse_sim.experiments.summary import summarise

__all__ = ["RunResult", "Scenario", "run_scenario", "summarise", "write_outputs"]
