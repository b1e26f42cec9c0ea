"""Scenarios (TOML -> typed config), running them, and writing their results; sweeps over grids and seeds."""

from recourse_sim.experiments.runner import RunResult, run_scenario, write_outputs
from recourse_sim.experiments.scenario import Scenario
from recourse_sim.reporting.summary import summarise
from recourse_sim.experiments.grid import Cell, Sweep, load_sweep
from recourse_sim.experiments.sweep import SweepResult, SweepStore, load_results, read_manifest, run_sweep, run_sweeps
from recourse_sim.experiments.report import Report, aggregate_seeds, report_sweep

__all__ = [
    "Cell",
    "Report",
    "RunResult",
    "Scenario",
    "Sweep",
    "SweepResult",
    "SweepStore",
    "aggregate_seeds",
    "load_results",
    "load_sweep",
    "read_manifest",
    "report_sweep",
    "run_scenario",
    "run_sweep",
    "run_sweeps",
    "summarise",
    "write_outputs",
]
