"""From results to tables and figures: summaries with confidence intervals, effects attributable to recourse
(paired with the no-recourse control), matplotlib figures and the SaTML 2023 reproduction report.

- :mod:`~recourse_sim.reporting.summary`: mean and 95% CI per system x round x metric;
- :mod:`~recourse_sim.reporting.attribution`: ``system - paired control`` effects and their paired tests;
- :mod:`~recourse_sim.reporting.trajectories`, :mod:`~recourse_sim.reporting.populations`,
  :mod:`~recourse_sim.reporting.comparisons`: figures (Okabe & Ito palette, :mod:`~recourse_sim.reporting.style`);
- :mod:`~recourse_sim.reporting.satml`: the reproduction report's findings and tables.

This package reads result tables and simulation states; it never runs a simulation (``experiments`` uses it,
not the other way round). Names are imported on first use (matplotlib and scipy are slow to import).
"""

from recourse_sim.lazy import lazy_exports

_FIGURES = {
    "plot_trajectories": "trajectories", "plot_trajectory_grid": "trajectories",
    "plot_population": "populations", "plot_population_snapshot": "populations", "draw_population": "populations",
    "Projection": "populations",
    "plot_final_bars": "comparisons", "plot_generator_grid": "comparisons", "GeneratorPanel": "comparisons",
    "PALETTE": "style",
}
_EXPORTS = {
    "summarise": "summary", "paired_effects": "attribution", "summarise_effects": "attribution", **_FIGURES,
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, {name: f"{__name__}.{module}" for name, module in _EXPORTS.items()})
