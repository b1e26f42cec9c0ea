"""Scenarios (TOML -> typed config), running them, and writing their results; sweeps over grids and seeds.

Names are imported on first use (``recourse_sim.lazy``): validating a scenario does not import Mesa or Ray.
"""

from recourse_sim.lazy import lazy_exports

_RUNNER, _SWEEP, _REPORT = "recourse_sim.experiments.runner", "recourse_sim.experiments.sweep", \
    "recourse_sim.experiments.report"
_EXPORTS = {
    "RunResult": _RUNNER, "run_scenario": _RUNNER, "write_outputs": _RUNNER,
    "Scenario": "recourse_sim.experiments.scenario",
    "summarise": "recourse_sim.reporting.summary",
    "Cell": "recourse_sim.experiments.grid", "Sweep": "recourse_sim.experiments.grid",
    "load_sweep": "recourse_sim.experiments.grid",
    "SweepResult": _SWEEP, "SweepStore": _SWEEP, "load_results": _SWEEP, "read_manifest": _SWEEP,
    "run_sweep": _SWEEP, "run_sweeps": _SWEEP,
    "Report": _REPORT, "aggregate_seeds": _REPORT, "report_sweep": _REPORT,
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
