"""recourse_sim: batched simulation of the endogenous dynamics of algorithmic recourse.

Reference: Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse", IEEE SaTML 2023.

>>> from recourse_sim import Scenario, run_scenario
>>> scenario = Scenario(models=["logistic_regression"], generators=["generic", "gravitational"], rounds=5)
>>> frame = run_scenario(scenario).results  # tidy table: system x round x metric
"""

from recourse_sim.data import DATASETS, Dataset, FeatureSchema
from recourse_sim.experiments import RunResult, Scenario, run_scenario, summarise
from recourse_sim.generators import GENERATORS, GeneratorSpec, generate_counterfactuals
from recourse_sim.metrics import METRICS
from recourse_sim.models import MODELS
from recourse_sim.simulation import RecourseDynamics, SimulationConfig

__version__ = "0.1.0"

__all__ = [
    "DATASETS", "GENERATORS", "METRICS", "MODELS", "Dataset", "FeatureSchema", "GeneratorSpec",
    "RecourseDynamics", "RunResult", "Scenario", "SimulationConfig", "generate_counterfactuals",
    "run_scenario", "summarise",
]
