"""recourse_sim: batched simulation of the endogenous dynamics of algorithmic recourse.

Reference: Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse", IEEE SaTML 2023.

>>> from recourse_sim import Scenario, run_scenario
>>> scenario = Scenario(models=["logistic_regression"], generators=["generic", "gravitational"], rounds=5)
>>> frame = run_scenario(scenario).results  # tidy table: system x round x metric

The names below are imported on first use (``recourse_sim.lazy``), so importing the package is instant.
"""

from recourse_sim.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "DATASETS": "recourse_sim.data", "Dataset": "recourse_sim.data", "FeatureSchema": "recourse_sim.data",
    "RunResult": "recourse_sim.experiments.runner", "run_scenario": "recourse_sim.experiments.runner",
    "Scenario": "recourse_sim.experiments.scenario", "summarise": "recourse_sim.reporting.summary",
    "GENERATORS": "recourse_sim.generators", "GeneratorSpec": "recourse_sim.generators",
    "generate_counterfactuals": "recourse_sim.generators",
    "METRICS": "recourse_sim.metrics", "MODELS": "recourse_sim.models",
    "RecourseDynamics": "recourse_sim.simulation.model", "SimulationConfig": "recourse_sim.simulation.config",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
