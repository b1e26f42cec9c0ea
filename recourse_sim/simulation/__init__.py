"""The Mesa simulation: configuration, population state, evaluation and the model itself.

The model (and with it Mesa) is imported on first use, so reading a configuration stays light.
"""

from recourse_sim.lazy import lazy_exports

_EXPORTS = {
    "MetricSettings": "recourse_sim.simulation.config", "SimulationConfig": "recourse_sim.simulation.config",
    "System": "recourse_sim.simulation.config", "RecourseDynamics": "recourse_sim.simulation.model",
    "Population": "recourse_sim.simulation.population", "choose_recipients": "recourse_sim.simulation.population",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
