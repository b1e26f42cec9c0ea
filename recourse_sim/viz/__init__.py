"""Interactive and explanatory tooling: search-path tracing, counterfactual quality tables and the
dashboard (a Solara page on the Mesa model).

The dashboard (:mod:`recourse_sim.viz.dashboard`) needs the ``viz`` extra (``pip install -e ".[viz]"``);
importing this package does not.
"""

from recourse_sim.viz.explain import (
    GeneratorComparison,
    compare_generators,
    counterfactual_quality,
    trace_search,
)

__all__ = ["GeneratorComparison", "compare_generators", "counterfactual_quality", "trace_search"]
