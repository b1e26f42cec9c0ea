"""The Mesa simulation: configuration, population state, evaluation and the model itself."""

from recourse_sim.simulation.config import MetricSettings, SimulationConfig, System
from recourse_sim.simulation.model import RecourseDynamics
from recourse_sim.simulation.population import Population, choose_recipients

__all__ = ["MetricSettings", "Population", "RecourseDynamics", "SimulationConfig", "System", "choose_recipients"]
