"""The dashboard's figures: what the page's views draw from a
:class:`~recourse_sim.viz.dashboard_model.DashboardDynamics` each round.

The population in 2-D with the decision boundary (one panel per system when several run side by side), the metric
trajectories of :data:`DASHBOARD_METRICS`, the "Hidden costs of recourse" (:data:`COST_METRICS`), "Recourse by
group", and the line on who acted on the latest round's recourse. Each returns a matplotlib :class:`Figure` (or the
text) and does not touch pyplot; the page, :mod:`recourse_sim.viz.dashboard`, shows them. This module does not
import Solara.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from recourse_sim.reporting.populations import draw_population, padded_limits, plot_population_snapshot
from recourse_sim.reporting.trajectories import plot_trajectory_grid
from recourse_sim.viz.agent_controls import acted_line, plot_groups
from recourse_sim.viz.dashboard_model import DashboardDynamics
from recourse_sim.viz.scenario_controls import CONTROL_TEXT

DASHBOARD_METRICS = ("domain_mmd", "model_mmd", "accuracy", "validity")
#: The "Hidden costs of recourse" figure: a panel for each of these that the results hold (others are skipped).
COST_METRICS = ("collateral_rejections", "collateral_approvals", "lender_loss", "truth_accuracy", "truly_improved",
                "approval_rate", "acted_share", "agent_cost", "recourse_cost", "validity")
#: Population panels per row when several systems run side by side (more wrap onto further rows).
POPULATION_COLUMNS = 2


def population_figure(model: DashboardDynamics) -> Figure:
    """One system: its population by label and by received recourse (two panels). Several: one panel per system
    (see :func:`systems_population_figure`)."""
    if len(model.systems) > 1:
        return systems_population_figure(model)
    pop = model.population
    return plot_population_snapshot(
        pop.X[0].cpu().numpy(), pop.y[0].cpu().numpy(), model.scorer(0),
        recourse_round=pop.recourse_round[0].cpu().numpy(), current_round=model.round,
        projection=model.projection, title=f"Round {model.round}: {model.title()}",
        figure=Figure(figsize=(7.6, 3.6)),
    )


def systems_population_figure(model: DashboardDynamics) -> Figure:
    """One panel per system, side by side (:data:`POPULATION_COLUMNS` to a row, then wrapping): the same
    individuals, each system's own population by label with its recourse recipients ringed and its own decision
    boundary, all on the same axes so that who moved where compares across panels."""
    pop = model.population
    n = len(model.systems)
    columns = min(n, POPULATION_COLUMNS)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(3.8 * columns, 3.4 * rows + 0.3), layout="constrained")
    X = [pop.X[i].cpu().numpy() for i in range(n)]
    limits = padded_limits(np.concatenate([model.projection.transform(x) for x in X]))
    first = None
    for i, name in enumerate(model.system_names()):
        ax = figure.add_subplot(rows, columns, i + 1, sharex=first, sharey=first)
        first = first or ax
        draw_population(ax, X[i], pop.y[i].cpu().numpy(), colour_by="label_and_recourse",
                        recourse_round=pop.recourse_round[i].cpu().numpy(), current_round=model.round,
                        predict_proba=model.scorer(i), projection=model.projection, limits=limits,
                        title=name + (CONTROL_TEXT if model.is_control[i] else ""), legend=i == 0)
    # Several systems make a long title: wrap it to the figure's width (about 13 characters an inch at 10 pt).
    title = textwrap.fill(f"Round {model.round}: {model.title()}", width=int(13 * figure.get_figwidth()))
    figure.suptitle(title, fontsize=10)
    return figure


def results_by_system(model: DashboardDynamics) -> tuple[pd.DataFrame, str]:
    """The results with a column naming each row's system as the figures do (see
    :meth:`~recourse_sim.viz.dashboard_model.DashboardDynamics.system_names`), and that column's name: the hue of
    the trajectories."""
    frame = model.results()
    hue = "model / generator" if model.compares_models else "generator"
    names = dict(zip((s.label for s in model.systems), model.system_names()))
    return frame.assign(**{hue: frame["system"].map(names)}), hue


def metrics_figure(model: DashboardDynamics) -> Figure:
    """The trajectories of :data:`DASHBOARD_METRICS`, one line per system (a legend when several run)."""
    frame, hue = results_by_system(model)
    legend = len(model.systems) > 1
    figure = Figure(figsize=(7.0, 5.0 + 0.5 * legend), layout="constrained")
    return plot_trajectory_grid(frame, DASHBOARD_METRICS, row=None, hue=hue, figure=figure, col_wrap=2,
                                legend=legend)


def present_metrics(frame: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """``metrics`` that ``frame`` holds a value for, in their order."""
    held = set(frame.loc[frame["value"].notna(), "metric"])
    return [metric for metric in metrics if metric in held]


def costs_figure(model: DashboardDynamics) -> Figure:
    """"Hidden costs of recourse" for ``model`` (see :func:`plot_costs`)."""
    frame, hue = results_by_system(model)
    return plot_costs(frame, hue, legend=len(model.systems) > 1)


def plot_costs(frame: pd.DataFrame, hue: str, legend: bool) -> Figure:
    """"Hidden costs of recourse": the trajectories of those :data:`COST_METRICS` that ``frame`` holds, one line
    per ``hue`` value; before any is measured, a note says so."""
    metrics = present_metrics(frame, COST_METRICS)
    columns = 2 if len(metrics) <= 4 else 3
    rows = max(1, math.ceil(len(metrics) / columns))
    figure = Figure(figsize=(7.0, 2.5 * rows + 0.4 + 0.5 * legend), layout="constrained")
    if metrics:
        plot_trajectory_grid(frame, metrics, row=None, hue=hue, figure=figure, col_wrap=columns, legend=legend)
    else:
        figure.text(0.5, 0.5, "Nothing measured yet: the costs appear once recourse has been given (round 1).",
                    ha="center", va="center", color="0.4")
    figure.suptitle("Hidden costs of recourse", fontsize=10)
    return figure


def groups_figure(model: DashboardDynamics) -> Figure:
    """"Recourse by group" for ``model``, one line per system x group (see
    :func:`~recourse_sim.viz.agent_controls.plot_groups`)."""
    frame, hue = results_by_system(model)
    return plot_groups(frame, hue, several=len(model.systems) > 1)


def acted_text(model: DashboardDynamics) -> str:
    """Who acted on the latest round's recourse, per system (see
    :func:`~recourse_sim.viz.agent_controls.acted_line`); the no-recourse control is left out: its recipients are
    given nothing to act on."""
    frame, hue = results_by_system(model)
    controls = [s.label for s, control in zip(model.systems, model.is_control.tolist()) if control]
    return acted_line(frame[~frame["system"].isin(controls)], hue)


def has_groups(model: DashboardDynamics) -> bool:
    """Whether ``model``'s individuals fall into several groups (the agents' ``groups``)."""
    return len(model.people.group_names) > 1
