"""Interactive and explanatory tooling: search-path tracing, counterfactual quality tables and the
dashboard (a Solara page on the Mesa model).

The dashboard's page (:mod:`recourse_sim.viz.dashboard`) needs the ``viz`` extra (``pip install -e ".[viz]"``);
importing this package does not, nor do the modules the page is built on, which do not import Solara: its controls
and scenario (:mod:`~recourse_sim.viz.scenario_controls`, :mod:`~recourse_sim.viz.agent_controls`), its model
(:mod:`~recourse_sim.viz.dashboard_model`) and its figures (:mod:`~recourse_sim.viz.dashboard_figures`).
"""

from recourse_sim.viz.explain import (
    GeneratorComparison,
    compare_generators,
    counterfactual_quality,
    trace_search,
)

__all__ = ["GeneratorComparison", "compare_generators", "counterfactual_quality", "trace_search"]
