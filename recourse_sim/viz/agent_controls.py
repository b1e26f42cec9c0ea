"""The dashboard's "Agents" controls: how recipients act on recourse (the ``[agents]`` table of a scenario).

The controls set the options of :class:`~recourse_sim.simulation.agents.AgentSettings` that a user most wants to
vary while watching the dynamics: the outcome model, which of the K counterfactuals an individual implements,
compliance, cost aversion, the share of the way moved, a budget with its over-budget rule, and the groups whose
metrics are reported apart. Everything else of the ``[agents]`` table (the truth source, cost weights, the
group share or threshold...) comes from the scenario unchanged.

One home for every default: the controls start at the scenario's ``[agents]`` values, and the scenario's
missing values are :class:`AgentSettings`' own defaults; the options of a picker are the values its field's
``Literal`` annotation allows. A trait (``compliance``, ``move_fraction``, ``budget``) that the scenario sets as
a distribution table is kept (its control holds ``None``) until the user moves its slider, which replaces the
table by that number; the settings line says so.

This module holds what the page needs apart from its widgets: the control specs, the mapping from controls to
:class:`AgentSettings`, the text of the settings line, the group picker's options for the data at hand, the
per-group figure and the line on who acted. It does not import Solara.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from recourse_sim.data.dataset import Dataset
from recourse_sim.metrics.catalogue import split_group
from recourse_sim.reporting.trajectories import plot_trajectory_grid
from recourse_sim.simulation.agents import RANDOM_GROUPS, AgentSettings, Trait

#: The agent controls, in the order the page shows them.
AGENT_CONTROLS = ("outcome", "choice", "compliance", "cost_aversion", "move_fraction", "budget_on", "budget",
                  "over_budget", "groups")
#: The controls that set a trait: a number, or (``None``) the scenario's distribution table, kept.
TRAITS = {"compliance": "share", "move_fraction": "fraction", "budget": "amount"}  # -> Trait.parse's domain
#: The groups control's value for "no groups" (``AgentSettings.groups = None``; ``None`` means "not set").
NO_GROUPS = "none"
#: The pickers: the control and the ``AgentSettings`` field whose ``Literal`` lists the options.
PICKERS = ("outcome", "choice", "over_budget")
#: Slider range (min, max, step) of each numeric agent control.
AGENT_RANGES = {
    "compliance": (0.0, 1.0, 0.05),
    "cost_aversion": (0.0, 5.0, 0.1),
    "move_fraction": (0.1, 1.0, 0.05),
    "budget": (0.1, 10.0, 0.1),
}
#: Where the budget slider starts when the scenario sets no budget (AgentSettings has no budget by default, so
#: there is no default amount to read): one standard deviation of movement along one feature, the cost unit.
BUDGET_START = 1.0
AGENT_LABELS = {
    "outcome": "Outcome of a move",
    "choice": "Counterfactual implemented (of the K)",
    "compliance": "Compliance: chance of acting",
    "cost_aversion": "Cost aversion a",
    "move_fraction": "Share of the way moved",
    "budget_on": "A budget per person",
    "budget": "Budget (cost units: SDs moved)",
    "over_budget": "Over budget",
    "groups": "Groups (metrics per group)",
}
#: How a picker shows an option; an option not listed here (a new one in agents.py) shows its name.
OPTION_TEXT = {
    "outcome": {"model": "model's prediction (paper)", "truth": "truth (a real improvement)",
                "unchanged": "unchanged (gaming)"},
    "choice": {"random": "one at random (paper)", "cheapest": "the cheapest valid one",
               "most_confident": "the most confident one"},
    "over_budget": {"refuse": "refuse the recourse", "partial": "move until the budget is spent"},
}
#: What the page says at the top of the "Agents" card.
AGENTS_TEXT = ("How recipients act on recourse (the scenario's [agents]): a recipient acts with probability "
               "compliance · e^(−a · cost), moves its share of the way, within its budget; its new label is the "
               "outcome (the model's prediction, a draw from the truth, or its old label). The defaults are the "
               "paper's: everyone acts, on one of its K counterfactuals at random, all the way.")
#: The per-group figure: a panel for each of these that the results hold per group.
GROUP_METRICS = ("approval_rate", "validity", "acted_share", "lender_loss")


# ------------------------------------------------------------------------------------------ defaults
def agent_options(name: str) -> tuple[str, ...]:
    """The values picker ``name`` offers: those its :class:`AgentSettings` field's ``Literal`` allows."""
    return typing.get_args(typing.get_type_hints(AgentSettings)[name])


def option_texts(name: str) -> dict[str, str]:
    """Picker ``name``'s options, ``value -> shown text``."""
    return {value: OPTION_TEXT.get(name, {}).get(value, value) for value in agent_options(name)}


def trait_number(setting) -> float | None:
    """A trait's value as a control holds it: the number, or ``None`` for a distribution table (kept)."""
    return None if isinstance(setting, Mapping) else float(setting)


def trait_centre(name: str, setting) -> float:
    """Where a trait's slider sits: the number, else the table's centre (the midpoint of a uniform, the mean of
    a beta, the median of a log-normal)."""
    trait = Trait.parse(f"agents.{name}", setting, TRAITS[name])
    kind, params = trait.distribution, trait.params
    return (params[0] + params[1]) / 2 if kind == "uniform" else params[0]


def trait_text(setting) -> str:
    """A trait as the settings line shows it: ``0.5``, ``beta(mean 0.6, concentration 4)``."""
    if not isinstance(setting, Mapping):
        return f"{float(setting):g}"
    params = ", ".join(f"{key} {value:g}" for key, value in setting.items() if key != "distribution")
    return f"{setting['distribution']}({params})"


def agent_start(agents: AgentSettings) -> dict:
    """The controls' starting values from ``agents`` (a scenario's ``[agents]``): a trait's number, or ``None``
    where it is a distribution table; the budget switch is on where the scenario sets a budget."""
    budget = BUDGET_START if agents.budget is None else trait_number(agents.budget)
    return {"outcome": agents.outcome, "choice": agents.choice, "compliance": trait_number(agents.compliance),
            "cost_aversion": float(agents.cost_aversion), "move_fraction": trait_number(agents.move_fraction),
            "budget_on": agents.budget is not None, "budget": budget, "over_budget": agents.over_budget,
            "groups": agents.groups or NO_GROUPS}


def agent_control_specs(agents: AgentSettings) -> dict[str, dict]:
    """The agent controls (Mesa's ``model_params`` format, marked ``agents: True``) starting from ``agents``;
    a picker lists its ``options`` (``value -> text``; the groups picker's depend on the data, see
    :func:`group_options`)."""
    start = agent_start(agents)
    specs = {}
    for name in AGENT_CONTROLS:
        spec = {"value": start[name], "label": AGENT_LABELS[name], "agents": True}
        if name in PICKERS:
            spec |= {"type": "Select", "options": option_texts(name)}
        elif name == "groups":
            spec |= {"type": "Select", "options": {NO_GROUPS: NO_GROUPS}}
        elif name == "budget_on":
            spec |= {"type": "Switch"}
        else:
            shown = trait_centre(name, getattr(agents, name)) if start[name] is None else start[name]
            low, high, step = AGENT_RANGES[name]
            spec |= {"type": "SliderFloat", "min": min(low, shown), "max": max(high, shown), "step": step}
        specs[name] = spec
    return specs


# ----------------------------------------------------------------------------------- controls -> settings
def agent_settings(base: AgentSettings, controls: Mapping) -> AgentSettings:
    """``base`` (a scenario's ``[agents]``) with the agent controls' values; a control missing or ``None``
    keeps ``base``'s value (a trait's distribution table included). Another grouping than ``base``'s drops
    ``base``'s ``group_cost_weights`` and ``group_threshold``: they name or split its groups. Raises
    :class:`~recourse_sim.errors.ConfigError` for a bad combination (e.g. outcome "truth" without a truth)."""
    given = {name: controls[name] for name in AGENT_CONTROLS if controls.get(name) is not None}
    changes = {name: given[name] for name in (*PICKERS, "cost_aversion") if name in given}
    changes |= {name: float(given[name]) for name in ("compliance", "move_fraction") if name in given}
    if given.get("budget_on") is False:
        changes["budget"] = None
    elif given.get("budget_on") and ("budget" in given or base.budget is None):
        changes["budget"] = float(given.get("budget", BUDGET_START))
    if "groups" in given:
        groups = None if given["groups"] == NO_GROUPS else given["groups"]
        if groups != base.groups:
            changes |= {"groups": groups, "group_cost_weights": {}, "group_threshold": None}
    return dataclasses.replace(base, **changes)


def agents_changed(agents: AgentSettings) -> list[str]:
    """The settings line's words on ``agents``: each option that differs from :class:`AgentSettings`' default,
    e.g. ``compliance = 0``, ``outcome = truth``; a distribution table says it is the scenario's and that its
    slider replaces it."""
    defaults = AgentSettings()
    parts = []
    for item in dataclasses.fields(AgentSettings):
        value = getattr(agents, item.name)
        if value == getattr(defaults, item.name):
            continue
        if isinstance(value, Mapping) and "distribution" in value:
            parts.append(f"{item.name} = {trait_text(value)} from the scenario (its slider replaces it)")
        elif isinstance(value, Mapping):
            parts.append(f"{item.name} = {{{', '.join(f'{k}: {v}' for k, v in value.items())}}}")
        else:
            parts.append(f"{item.name} = {trait_text(value) if isinstance(value, (int, float)) else value}")
    return parts


def controls_for_dataset(controls: dict, dataset: str) -> dict:
    """``controls`` with ``dataset`` chosen: a grouping by an attribute or feature of the previous data does not
    carry over (the groups go back to none); a random split does."""
    if dataset != controls.get("dataset") and controls.get("groups") not in (None, NO_GROUPS, "random"):
        return controls | {"dataset": dataset, "groups": NO_GROUPS}
    return controls | {"dataset": dataset}


# ------------------------------------------------------------------------------------------------ groups
def categorical_attributes(data: Dataset) -> list[str]:
    """The categorical attributes of ``data``, one per one-hot group, named by its columns' common prefix
    (``SEX_male``, ``SEX_female`` -> ``SEX``; ``EDUCATION_graduate_school``, ... -> ``EDUCATION``)."""
    names = data.schema.names
    attributes = []
    for columns in data.schema.categorical_groups:
        prefix = os.path.commonprefix([names[j] for j in columns])
        attributes.append(prefix[: prefix.rfind("_")] if "_" in prefix else prefix)
    return [attribute for attribute in attributes if attribute]


def group_options(data: Dataset, agents: AgentSettings) -> dict[str, str]:
    """What the groups picker offers for ``data``, ``value -> text``: none, a random split, then the data's
    categorical attributes, else (data without any, e.g. 2-D data) a split of each feature (a 0/1 feature by
    its values, another at ``agents.group_threshold`` or its median)."""
    share = agents.group_share
    options = {NO_GROUPS: NO_GROUPS,
               "random": f"random: {' / '.join(RANDOM_GROUPS)} ({share:.0%} / {1 - share:.0%})"}
    attributes = categorical_attributes(data)
    if attributes:
        return options | {attribute: f"{attribute} (one group per value)" for attribute in attributes}
    X = data.X.cpu().numpy()
    for j, name in enumerate(data.schema.names):
        binary = set(np.unique(X[:, j])) <= {0.0, 1.0}
        at = "its median" if agents.group_threshold is None else f"{agents.group_threshold:g}"
        options[name] = f"{name} (0 / 1)" if binary else f"{name}: below / above {at}"
    return options


def group_frame(frame: pd.DataFrame, hue: str, several: bool) -> tuple[pd.DataFrame, str]:
    """The per-group rows of :data:`GROUP_METRICS` in ``frame`` under their metric's name, with a column naming
    each line: the group, or ``system · group`` when ``several`` systems run; and that column's name."""
    split = frame["metric"].map(split_group)
    base, group = split.str[0], split.str[1]
    rows = frame[group.notna() & base.isin(GROUP_METRICS)]
    line = f"{hue} · group" if several else "group"
    names = (rows[hue] + " · " + group[rows.index]) if several else group[rows.index]
    return rows.assign(metric=base[rows.index], **{line: names}), line


def plot_groups(frame: pd.DataFrame, hue: str, several: bool) -> Figure:
    """"Recourse by group": the trajectories of those :data:`GROUP_METRICS` that ``frame`` holds per group, one
    line per group (per system and group when ``several`` systems run), so that a gap that recourse opens or
    widens between groups shows; before any is measured, a note says so."""
    rows, line = group_frame(frame, hue, several)
    metrics = [m for m in GROUP_METRICS if m in set(rows.loc[rows["value"].notna(), "metric"])]
    panel_rows = max(1, math.ceil(len(metrics) / 2))
    figure = Figure(figsize=(7.0, 2.5 * panel_rows + 0.9), layout="constrained")
    if metrics:
        plot_trajectory_grid(rows, metrics, row=None, hue=line, figure=figure, col_wrap=2, legend=True)
    else:
        figure.text(0.5, 0.5, "Nothing measured yet: the groups' metrics appear after round 1.",
                    ha="center", va="center", color="0.4")
    figure.suptitle("Recourse by group", fontsize=10)
    return figure


def acted_line(frame: pd.DataFrame, hue: str) -> str:
    """Who acted on the latest round's recourse, per system: ``Round 2: recipients who acted: gravitational 0%,
    generic 100%`` (``acted_share``, reported once recipients act otherwise than in the paper,
    ``AgentSettings.changes_behaviour``); empty before."""
    acted = frame[(frame["metric"] == "acted_share") & frame["value"].notna()]
    if acted.empty:
        return ""
    latest = acted[acted["round"] == acted["round"].max()]
    shares = ", ".join(f"{name} {value:.0%}" for name, value in zip(latest[hue], latest["value"]))
    return f"Round {int(latest['round'].iloc[0])}: recipients who acted on their recourse: {shares}"
