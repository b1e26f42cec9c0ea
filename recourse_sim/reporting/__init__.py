"""From results to tables and figures: summaries with confidence intervals, effects attributable to recourse
(paired with the no-recourse control), matplotlib figures and the SaTML 2023 reproduction report.

- :mod:`~recourse_sim.reporting.summary`: mean and 95% CI per system x round x metric;
- :mod:`~recourse_sim.reporting.attribution`: ``system - paired control`` effects and their paired tests;
- :mod:`~recourse_sim.reporting.trajectories`, :mod:`~recourse_sim.reporting.populations`,
  :mod:`~recourse_sim.reporting.comparisons`: figures (Okabe & Ito palette, :mod:`~recourse_sim.reporting.style`);
- :mod:`~recourse_sim.reporting.satml`: the reproduction report's findings and tables.

This package reads result tables and simulation states; it never runs a simulation (``experiments`` uses it,
not the other way round). The figure modules import matplotlib, so they are imported on first use here.
"""

from __future__ import annotations

import importlib

from recourse_sim.reporting.attribution import paired_effects, summarise_effects
from recourse_sim.reporting.summary import summarise

#: Public figure functions and the module that defines each (imported lazily: matplotlib is slow to import).
_FIGURES = {
    "plot_trajectories": "trajectories", "plot_trajectory_grid": "trajectories",
    "plot_population": "populations", "plot_population_snapshot": "populations", "draw_population": "populations",
    "Projection": "populations",
    "plot_final_bars": "comparisons", "plot_generator_grid": "comparisons", "GeneratorPanel": "comparisons",
    "PALETTE": "style",
}

__all__ = ["paired_effects", "summarise", "summarise_effects", *_FIGURES]


def __getattr__(name: str):
    if name in _FIGURES:
        return getattr(importlib.import_module(f"recourse_sim.reporting.{_FIGURES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
